#!/bin/sh
# make test-deps: install every optional oracle of `make test` on Debian or Ubuntu, so that
# `CLIP_TEST_STRICT=1 make test` skips nothing. Runs apt-get (as root, or through sudo) for what is
# missing, then `npm install` in test/ (Hugging Face tokenizers for Node, playwright-core).
#
#   python3-numpy python3-pil   most differential suites (NumPy, Pillow)
#   libjpeg-turbo-progs         cjpeg/jpegtran: test_jpeg's corpus; libjpeg-dev: its CMYK/YCCK files
#   clang                       test_jpeg/test_resize compile checks, make test-asan, make fuzz
#   gcc-multilib qemu-user      32-bit builds (test_jpeg; test/test_builds.sh's m32)
#   libomp-dev                  clang with OpenMP (test/test_builds.sh)
#   emscripten node-acorn       test_wasm, test_web
#   nodejs npm                  the Node side: tokenizer differential, the web page driver
#   chromium                    test_web, test_cli's rendering of match --html
#   unicode-data                test_tokenizer's random code points beyond U+07FF
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
PACKAGES="make gcc clang python3 python3-numpy python3-pil unicode-data libjpeg-turbo-progs libjpeg-dev
          qemu-user libomp-dev emscripten node-acorn chromium"
[ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] && PACKAGES="$PACKAGES gcc-multilib"
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

need=""
for p in $PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
# Node may come from elsewhere than Debian (whose npm package would then conflict with it)
command -v node >/dev/null 2>&1 || need="$need nodejs"
command -v npm >/dev/null 2>&1 || need="$need npm"
if [ -n "$need" ]; then
    echo "test-deps: apt-get install$need"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq $need >/dev/null
else
    echo "test-deps: every apt package is installed"
fi
echo "test-deps: npm install in test/"
(cd test && npm install --no-audit --no-fund --silent)
echo "test-deps: done; CLIP_TEST_STRICT=1 make test now runs every suite in full"
