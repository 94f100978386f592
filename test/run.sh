#!/bin/sh
# make test: every test suite, then one summary.
#
#   sh test/run.sh                          every suite found: test/test_*.c, then test/test_*.py
#   CLIP_TESTS="model cli" sh test/run.sh   only these suites
#   CLIP_TEST_STRICT=1 sh test/run.sh       a skipped suite fails the run (CI: every oracle installed)
#
# A suite is test/test_NAME.c (built with the library's sources, then run) or test/test_NAME.py
# (run with $PYTHON). Exit status 0: passed; 77: skipped, wholly or in part (it printed
# `skipped: needs X (install: ...)`); anything else: failed. A skipped suite never counts as passed.
# CLIP_KERNELS and CLIP_CFLAGS (set by make): -DCLIP_REFERENCE ... in a reference build, and the
# build's flags (-O3 -march=native ... -fopenmp), for the C suites; without make: -O2.
# Reference data comes from test/golden/ (extracted into test/out/golden/ by test/common.py).
cd "$(dirname "$0")/.." || exit 2
if [ -z "${PYTHON:-}" ]; then
    if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
CC=${CC:-cc}
[ -n "${LIBSRC:-}" ] || LIBSRC=$(printf 'print-libsrc:\n\t@echo $(LIBSRC)\n' | make -s -f Makefile -f - print-libsrc)
export PYTHON CC
mkdir -p test/out/logs
passed=0 failed=0 skipped=0 results=""

suites=${CLIP_TESTS:-$(for f in test/test_*.c test/test_*.py; do [ -f "$f" ] && basename "$f"; done |
                       sed 's/^test_//; s/\.[a-z]*$//' | awk '!seen[$0]++')}

run_suite() {   # name: runs test/test_NAME.{c,py}, prints its output, returns its status
    if [ -f "test/test_$1.c" ]; then
        # shellcheck disable=SC2086
        $CC -std=c99 ${CLIP_CFLAGS:--O2} ${CLIP_KERNELS:-} -Wall -Wextra -pedantic -I. "test/test_$1.c" $LIBSRC -lm -o "test/out/test_$1" &&
            "test/out/test_$1"
    elif [ -f "test/test_$1.py" ]; then
        # shellcheck disable=SC2086
        $PYTHON "test/test_$1.py"
    else
        echo "no suite test/test_$1.c or test/test_$1.py"
        return 2
    fi
}

for name in $suites; do
    echo "=== $name"
    log=test/out/logs/$name.log
    { run_suite "$name"; echo $? > "$log.rc"; } 2>&1 | tee "$log"
    rc=$(cat "$log.rc")
    last=$(grep -v '^[[:space:]]*$' "$log" | tail -1 | cut -c1-160)
    case $rc in
        0)  passed=$((passed + 1)) status=passed ;;
        77) skipped=$((skipped + 1)) status=SKIPPED ;;
        *)  failed=$((failed + 1)) status="FAILED (exit $rc)" ;;
    esac
    results="$results$(printf '  %-10s %-17s %s' "$name" "$status" "$last")
"
done

echo "=== summary"
printf '%s' "$results"
status=0
[ "$failed" -ne 0 ] && status=1
if [ "$skipped" -ne 0 ] && [ "${CLIP_TEST_STRICT:-0}" != 0 ]; then
    echo "CLIP_TEST_STRICT is set: a skipped suite fails the run (install every oracle: make test-deps)"
    status=1
fi
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
