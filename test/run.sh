#!/bin/sh
# make test: every test suite, one summary line at the end.
# Golden data is read from $CLIP_GOLDEN (default: ../shared/golden beside the repository).
cd "$(dirname "$0")/.." || exit 2
PYTHON=${PYTHON:-/usr/bin/python3}
CC=${CC:-cc}
mkdir -p test/out
passed=0 failed=0 failed_names=""
suite() {
    name=$1; shift
    echo "=== $name"
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); failed_names="$failed_names $name"; fi
}
suite tensor sh -c "$CC -std=c99 -O2 -Wall -Wextra -pedantic test/test_tensor.c tensor.c -lm -o test/out/test_tensor && test/out/test_tensor"
for t in ${CLIP_TESTS:-convert model fullsize tokenizer images jpeg resize hostile cli index wasm web}; do
    [ -f "test/test_$t.py" ] && suite "$t" $PYTHON "test/test_$t.py"
done
echo "=== summary"
[ -n "$failed_names" ] && echo "failed suites:$failed_names"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
