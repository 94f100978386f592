#!/bin/sh
# test/test_builds.sh: build `clip` several ways and run the core test suites against each build.
#
#   sh test/test_builds.sh            all builds: gcc clang m32 noomp ref
#   BUILDS="m32" sh test/test_builds.sh
#   BUILD_SUITES="model cli" sh test/test_builds.sh
#
# Builds (each in build/matrix/NAME/ from a copy of the sources, with the Makefile's own `clip` rule):
#   gcc    CC=gcc, the Makefile's CFLAGS and OpenMP
#   clang  CC=clang, the Makefile's CFLAGS and OpenMP (libomp-dev)
#   m32    CC=gcc CFLAGS="-O2 -m32" OPENMP=   (32-bit size_t; run through qemu-i386 -R 3G, a 3 GB
#          guest address space as on 32-bit Linux, where the kernel cannot run i386 programs; the
#          suites' own drivers are built -m32 too, without sanitizers)
#   noomp  CC=gcc, the Makefile's CFLAGS, OPENMP=
#   ref    CC=gcc, make REFERENCE=1: tensor.c's reference kernels, -O2 -ffp-contract=off
# A compiler warning fails the build. Suites: tensor (test/test_tensor.c built with the same compiler
# and flags) and test/test_SUITE.py for each of $BUILD_SUITES, with CLIP_BIN set to the build's
# `clip` and CC to its compiler. Logs: build/matrix/NAME/*.log. Slow: `make test` does not run it;
# .ci/run does (clang, m32, noomp: gcc is make test's own build). A suite that skipped a part
# (exit 77, e.g. its sanitizer builds under qemu-i386) is reported SKIPPED, not passed.
cd "$(dirname "$0")/.." || exit 2
PYTHON=${PYTHON:-/usr/bin/python3}
BUILDS=${BUILDS:-gcc clang m32 noomp ref}
SUITES=${BUILD_SUITES:-model tokenizer images cli hostile}
MATRIX=build/matrix
ROOT=$(pwd)
DEFAULT_CFLAGS=$(printf 'print-cflags:\n\t@echo $(CFLAGS)\n' | make -s -f Makefile -f - print-cflags)
REF_CFLAGS=$(printf 'print-cflags:\n\t@echo $(CFLAGS)\n' | make -s -f Makefile -f - print-cflags REFERENCE=1)
REF_KERNELS=$(printf 'print-kernels:\n\t@echo $(KERNELS)\n' | make -s -f Makefile -f - print-kernels REFERENCE=1)
passed=0 failed=0 skipped=0 summary=""

note() { summary="$summary$1
"; }

# m32: can this machine run i386 programs, natively or through qemu-i386?
m32_runner() {
    printf 'int main(void) { return sizeof(void *) == 4 ? 0 : 1; }\n' > "$MATRIX/probe.c"
    gcc -m32 "$MATRIX/probe.c" -o "$MATRIX/probe32" 2>/dev/null || { echo "none: gcc -m32 cannot link (apt-get install gcc-multilib)"; return; }
    if "$MATRIX/probe32" 2>/dev/null; then echo native
    elif command -v qemu-i386 >/dev/null && qemu-i386 "$MATRIX/probe32"; then echo qemu
    else echo "none: this kernel runs no i386 programs and qemu-i386 is missing (apt-get install qemu-user)"
    fi
}

# gcc -m32 for the drivers the suites compile: OUT is written as OUT.i386 plus a script OUT that
# runs it through qemu-i386 (-R 3G: qemu's default 4 GB reservation fails under test_hostile's
# 4 GB address-space limit). Sanitizers are refused (they do not run under qemu), so the suites skip them.
write_m32_cc() {
    cat > "$1" <<'EOF'
#!/bin/sh
out=a.out prev=
for a in "$@"; do
    case $a in
        -fsanitize=*) echo "cc-m32: no sanitizers for programs run by qemu-i386" >&2; exit 1 ;;
        -c|-E|-S) exec gcc -m32 "$@" ;;
    esac
    [ "$prev" = -o ] && out=$a
    prev=$a
done
gcc -m32 "$@" -o "$out.i386" || exit 1
printf '#!/bin/sh\nexec qemu-i386 -R 3G "%s" "$@"\n' "$(cd "$(dirname "$out")" && pwd)/$(basename "$out").i386" > "$out"
chmod +x "$out"
EOF
    chmod +x "$1"
}

mkdir -p "$MATRIX"
for b in $BUILDS; do
    dir=$MATRIX/$b
    case $b in
        gcc)   cc=gcc   cflags=$DEFAULT_CFLAGS openmp=-fopenmp reference= kernels= ;;
        clang) cc=clang cflags=$DEFAULT_CFLAGS openmp=-fopenmp reference= kernels= ;;
        m32)   cc=gcc   cflags="-O2 -m32"      openmp= reference= kernels= ;;
        noomp) cc=gcc   cflags=$DEFAULT_CFLAGS openmp= reference= kernels= ;;
        ref)   cc=gcc   cflags=$REF_CFLAGS     openmp=-fopenmp reference=1 kernels=$REF_KERNELS ;;
        *) echo "test_builds: unknown build '$b' (gcc, clang, m32, noomp, ref)"; exit 2 ;;
    esac
    echo "=== build $b: CC=$cc CFLAGS=\"$cflags\" OPENMP=$openmp"
    if ! command -v $cc >/dev/null; then
        echo "SKIPPED build $b: $cc is not installed"; note "$b: SKIPPED ($cc not installed)"; skipped=$((skipped + 1)); continue
    fi
    rm -rf "$dir" && mkdir -p "$dir"
    runner="" test_cc=$cc images_args=""
    if [ "$b" = m32 ]; then
        how=$(m32_runner)
        case $how in
            none*) echo "SKIPPED build m32: ${how#none: }"; note "m32: SKIPPED (${how#none: })"; skipped=$((skipped + 1)); continue ;;
            qemu) runner="qemu-i386 -R 3G"; write_m32_cc "$ROOT/$dir/cc-m32"; test_cc=$ROOT/$dir/cc-m32; images_args=--no-asan ;;
        esac
    fi
    cp Makefile ./*.c ./*.h "$dir/" && cp -r decode "$dir/"
    if ! nice make -C "$dir" clip CC="$cc" CFLAGS="$cflags" OPENMP="$openmp" REFERENCE="$reference" > "$dir/build.log" 2>&1; then
        echo "FAIL build $b (see $dir/build.log):"; tail -5 "$dir/build.log"
        note "$b: BUILD FAILED"; failed=$((failed + 1)); continue
    fi
    warnings=$(grep -c "warning:" "$dir/build.log")
    line="$b: build"
    if [ "$warnings" -eq 0 ]; then echo "ok   build $b, no warnings"; passed=$((passed + 1)); line="$line ok"
    else echo "FAIL build $b: $warnings warnings:"; grep "warning:" "$dir/build.log" | head -5; failed=$((failed + 1)); line="$line $warnings-warnings"
    fi
    clip_bin=$ROOT/$dir/clip
    if [ -n "$runner" ]; then
        printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$runner" "$clip_bin" > "$dir/clip-run" && chmod +x "$dir/clip-run"
        clip_bin=$ROOT/$dir/clip-run
    fi
    # tensor: the kernels' own test, same compiler and flags
    if $cc -std=c99 -Wall -Wextra -pedantic $cflags $openmp $kernels test/test_tensor.c tensor.c -lm -o "$dir/test_tensor" > "$dir/tensor.log" 2>&1 \
       && $runner "$dir/test_tensor" >> "$dir/tensor.log" 2>&1 && ! grep -q "warning:" "$dir/tensor.log"; then
        r=ok passed=$((passed + 1))
    else
        r=FAIL failed=$((failed + 1))
    fi
    echo "$r   $b tensor: $(tail -1 "$dir/tensor.log")"
    line="$line, tensor $r"
    for s in $SUITES; do
        if [ ! -f "test/test_$s.py" ]; then echo "skip $b $s: test/test_$s.py does not exist"; continue; fi
        args=""
        [ "$s" = images ] && args=$images_args
        start=$(date +%s)
        CLIP_BIN=$clip_bin CC=$test_cc nice "$PYTHON" "test/test_$s.py" $args > "$dir/$s.log" 2>&1
        case $? in
            0)  r=ok passed=$((passed + 1)) ;;
            77) r=SKIPPED skipped=$((skipped + 1)) ;;   # in part: e.g. no sanitizers under qemu-i386
            *)  r=FAIL failed=$((failed + 1)) ;;
        esac
        echo "$r   $b $s: $(tail -1 "$dir/$s.log") ($(( $(date +%s) - start )) s)"
        [ "$r" = FAIL ] && grep -E "^ *FAIL" "$dir/$s.log" | head -5
        line="$line, $s $r"
    done
    note "$line"
done
echo "=== summary"
printf '%s' "$summary"
echo "builds: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
