# clip.c - make builds everything a user needs: the `clip` command, libclip.a and the shared
# libclip.so (libclip.dylib on macOS) that python/clipc.py loads
#
# make REFERENCE=1 builds everything (clip, libclip.a, wasm, the kernels' test) on tensor.c's
# reference kernels instead of the fast ones (-DCLIP_REFERENCE), with portable flags: no
# -march=native, no FMA contraction, SSE2 on i386, so that every sum runs in the order the code
# writes and every output has the same bits on every machine (README: "The same bits everywhere").
# A cross build needs only the compiler:
#   make REFERENCE=1 CC='gcc -m32' OPENMP=
#   make REFERENCE=1 CC='clang --target=aarch64-linux-gnu' OPENMP= clip   (links with binutils-aarch64-linux-gnu)
# A change of flags (REFERENCE, CC, CFLAGS, OPENMP) rebuilds what they built.
CC      ?= cc
OPENMP  ?= -fopenmp
PYTHON  ?= /usr/bin/python3
PREFIX  ?= /usr/local
EMCC    ?= emcc
ifeq ($(REFERENCE),1)
CFLAGS  ?= -O2
WASMFLAGS ?= -O2
# i386 (e.g. CC='gcc -m32'): SSE2 arithmetic, never x87's extended precision; asked of $(CC) itself
REF_I386 := $(shell echo __i386__ | $(CC) -E -P -x c - 2>/dev/null | tr -d ' \n')
KERNELS  = -DCLIP_REFERENCE -ffp-contract=off $(if $(filter 1,$(REF_I386)),-msse2 -mfpmath=sse)
else
CFLAGS  ?= -O3 -march=native -mprefer-vector-width=512
WASMFLAGS ?= -O3 -msimd128
# no FMA contraction in the fast build either (here, so that a CFLAGS of one's own keeps it): tensor.c
# fuses its float32 matrix products itself (MADD), and everything else rounds as in WebAssembly, so
# that q8 models give the same bits there
KERNELS  = -ffp-contract=off
endif
WARN     = -std=c99 -Wall -Wextra -pedantic
# The library's sources (README, "Code layout"); the tests read these lists: make -s print-IMAGE_SRC
TOKENIZER_SRC = tokenizer.c
IMAGE_SRC     = image.c decode/png.c decode/inflate.c decode/jpeg.c decode/bmp.c decode/ppm.c decode/png_write.c
MODEL_SRC     = clip.c tensor.c
LIBSRC   = $(TOKENIZER_SRC) $(IMAGE_SRC) $(MODEL_SRC)
HEADERS  = clip.h internal.h decode/decode.h unicode_tables.h
CLISRC   = main.c search.c
BUILD_FLAGS = $(CC) $(WARN) $(CFLAGS) $(OPENMP) $(KERNELS)
WASM_FLAGS  = $(EMCC) $(WARN) $(WASMFLAGS) $(KERNELS)
PIC     ?= -fPIC -fno-semantic-interposition
LIBOBJ   = $(LIBSRC:%.c=build/lib/%.o)
SHLIB   := libclip.$(if $(filter Darwin,$(shell uname -s)),dylib,so)

all: clip libclip.a $(SHLIB) train

# build/flags and build/wasm-flags hold the flags the last build used; they change (and so
# rebuild their targets) only when the flags do
build/flags build/wasm-flags: FORCE
	@mkdir -p build
	@echo '$(if $(filter build/flags,$@),$(BUILD_FLAGS),$(WASM_FLAGS))' > $@.new
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi
FORCE:

clip: $(CLISRC) $(LIBSRC) $(HEADERS) build/flags
	$(CC) $(WARN) $(CFLAGS) $(OPENMP) $(KERNELS) -o $@ $(CLISRC) $(LIBSRC) -lm

# the library's objects, position-independent so that both libraries share them (no
# interposition: the code inlines as the command's does, so both give the same floats)
build/lib/%.o: %.c $(HEADERS) build/flags
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $(OPENMP) $(KERNELS) $(PIC) -I. -c -o $@ $<

libclip.a: $(LIBOBJ)
	rm -f $@ && $(AR) rcs $@ $(LIBOBJ)

$(SHLIB): $(LIBOBJ)
	$(CC) $(CFLAGS) $(OPENMP) -shared -o $@ $(LIBOBJ) -lm

# train.c: contrastive pre-training of a small CLIP (shapes.c draws its pictures)
TRAINSRC = train.c shapes.c
# (its multiply-adds fused where the machine has FMA: training wants speed, not the same bits everywhere)
TRAIN_FMA = $(if $(filter 1,$(REFERENCE)),,-ffp-contract=fast)
train: $(TRAINSRC) shapes.h $(LIBSRC) $(HEADERS) build/flags
	$(CC) $(WARN) $(CFLAGS) $(OPENMP) $(KERNELS) $(TRAIN_FMA) -o $@ $(TRAINSRC) $(LIBSRC) -lm

# data/clip-shapes.bin: the small CLIP that ships with the repository, retrained from its seed
# (10 minutes on 2 idle cores of this machine; README, "Training a small CLIP")
SHIPPED_MODEL = data/clip-shapes.bin
TINY_SEED ?= 1
TINY_STEPS ?= 12000
tiny-model: train
	mkdir -p build
	./train model --seed $(TINY_SEED) --steps $(TINY_STEPS) --lr 0.002 --evals 12 --patch 8 --image-size 32 -o build/clip-shapes \
	    --curve data/clip-shapes-loss.svg
	python3 convert.py build/clip-shapes -o $(SHIPPED_MODEL)

# experiment 1 on the demo photo with openai/clip-vit-base-patch32 (fetched once into models/);
# without it and without network, on the shipped model and a shipped picture
DEMO_MODEL = models/clip-vit-base-patch32.bin
demo: clip
	@mkdir -p models
	@if test -f $(DEMO_MODEL) || python3 convert.py openai/clip-vit-base-patch32 -o $(DEMO_MODEL); then \
	    echo "model: $(DEMO_MODEL) (openai/clip-vit-base-patch32)"; \
	    ./clip match -m $(DEMO_MODEL) -i data/cat.png -t "a photo of a cat" -t "a photo of a dog" \
	        -t "a photo of an airplane" -t "一张彩色的猫图片" --html models/demo.html || exit 1; \
	else \
	    echo "make demo: $(DEMO_MODEL) is not here and could not be fetched;"; \
	    echo "model: $(SHIPPED_MODEL), the small CLIP trained by this repository on pictures of coloured shapes"; \
	    ./clip match -m $(SHIPPED_MODEL) -i data/shapes-demo.png -t "a photo of a red circle" \
	        -t "a photo of an orange star" -t "a photo of a purple star" -t "a photo of a blue square" \
	        -t "a photo of a green triangle" --html models/demo.html || exit 1; \
	fi
	@echo "wrote models/demo.html"

# WebAssembly (emscripten, no OpenMP): build/wasm/clip.js is the `clip` command for Node on host
# files (node --no-experimental-fetch build/wasm/clip.js ...); web/clip.js + web/clip.wasm is the
# library module web/index.html loads (createClip(), the functions of web/clip_web.c).
WASM_EXPORTS = _malloc,_free,_web_load_file,_web_load_memory,_web_alloc,_web_unload,_web_error,_web_dim,_web_image_size,_web_logit_scale,_web_embed_image,_web_embed_text,_web_match
wasm: build/wasm/clip.js web/clip.js web/clip-shapes.bin web/shapes-demo.png
web/clip-shapes.bin: $(SHIPPED_MODEL)
	cp $< $@
web/shapes-demo.png: data/shapes-demo.png
	cp $< $@
build/wasm/clip.js: $(CLISRC) $(LIBSRC) $(HEADERS) build/wasm-flags
	mkdir -p build/wasm
	NODE_PATH=$${NODE_PATH:-/usr/share/nodejs} $(EMCC) $(WARN) $(WASMFLAGS) $(KERNELS) -sNODERAWFS=1 -sALLOW_MEMORY_GROWTH=1 \
	    -sEXIT_RUNTIME=1 -o $@ $(CLISRC) $(LIBSRC) -lm
web/clip.js: web/clip_web.c $(LIBSRC) $(HEADERS) build/wasm-flags
	NODE_PATH=$${NODE_PATH:-/usr/share/nodejs} $(EMCC) $(WARN) $(WASMFLAGS) $(KERNELS) -sMODULARIZE=1 -sEXPORT_NAME=createClip \
	    -sENVIRONMENT=web,node -sALLOW_MEMORY_GROWTH=1 -sEXPORTED_FUNCTIONS=$(WASM_EXPORTS) \
	    -sEXPORTED_RUNTIME_METHODS=FS,UTF8ToString,stringToUTF8,lengthBytesUTF8 -o $@ web/clip_web.c $(LIBSRC) -lm

# make test: every suite in test/ (test/README.md). Needs a C compiler, make and python3; a suite
# that needs an optional tool says "skipped: needs X" (make test-deps installs them all, and
# CLIP_TEST_STRICT=1 makes a skipped suite fail the run). One suite: CLIP_TESTS="model cli" make test.
# CLIP_KERNELS, CLIP_CFLAGS: the kernel flags and the build's own, for the C suites (tensor.c's
# kernels are tested as `clip` runs them: AVX-512 here, with OpenMP).
test: all
	CLIP_KERNELS="$(KERNELS)" CLIP_CFLAGS="$(CFLAGS) $(OPENMP)" PYTHON="$(PYTHON)" LIBSRC="$(LIBSRC)" sh test/run.sh

# make test-deps: every optional oracle of make test, on Debian/Ubuntu (apt-get; npm install in test/)
test-deps:
	sh test/deps.sh

bench: clip
	$(PYTHON) test/bench.py

clean:
	rm -rf clip train libclip.a libclip.so libclip.dylib build test/out clip.js clip.wasm web/clip.js web/clip.wasm web/clip-shapes.bin web/shapes-demo.png

install: all
	mkdir -p $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include
	cp clip $(DESTDIR)$(PREFIX)/bin/
	cp libclip.a $(SHLIB) $(DESTDIR)$(PREFIX)/lib/
	cp clip.h $(DESTDIR)$(PREFIX)/include/

print-%:
	@echo $($*)

.PHONY: all demo test test-deps bench clean install wasm tiny-model FORCE

# Sanitizers and fuzzing (test/fuzz/README.md): the library's sources built with
# AddressSanitizer and UndefinedBehaviorSanitizer.
SAN_CC    ?= clang
SANITIZE   = -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
SANENV     = UBSAN_OPTIONS=print_stacktrace=1:exitcode=86 ASAN_OPTIONS=exitcode=86:quarantine_size_mb=16

# make test-asan: the suites that run the library, with CLIP_BIN=build/asan/clip; build/asan/cc is
# the compiler the suites build their own C drivers with (CC), so those are sanitized too. A
# sanitizer report, a leak included (every program frees what it allocated, on errors too), exits 86.
# Not here: same_bits (it builds its own targets), train and gradcheck (train.c, not the library),
# python (it compares libclip.so with `clip` bit for bit, and the sanitized `clip` rounds differently);
# quant on the tiny models only.
ASAN_TESTS = $(filter-out same_bits train gradcheck python,$(patsubst test/test_%,%,$(basename $(wildcard test/test_*.c test/test_*.py))))
test-asan:
	mkdir -p build/asan
	printf '#!/bin/sh\nexec $(SAN_CC) $(SANITIZE) "$$@"\n' > build/asan/cc && chmod +x build/asan/cc
	build/asan/cc $(WARN) -o build/asan/clip $(CLISRC) $(LIBSRC) -lm
	$(SANENV):detect_leaks=1 CC=$(CURDIR)/build/asan/cc CLIP_BIN=$(CURDIR)/build/asan/clip \
	    CLIP_TESTS="$${CLIP_TESTS:-$(ASAN_TESTS)}" CLIP_QUANT_TINY=1 PYTHON="$(PYTHON)" sh test/run.sh

# make fuzz T=image|png|jpeg|model|tokenizer S=seconds: build test/fuzz/fuzz_T.c (fuzz_image.c
# for T=jpeg) with libFuzzer and run it for S seconds on test/out/fuzz/T/corpus plus the seeds
# test/fuzz/make_seeds.py writes to test/out/fuzz/T/seeds; crashes land in test/out/fuzz/T/.
T         ?= image
S         ?= 60
FUZZ_BIN   = build/fuzz/fuzz_$(if $(wildcard test/fuzz/fuzz_$(T).c),$(T),image)
FUZZ_LEN   = $(if $(filter tokenizer,$(T)),1024,32768)
FUZZ_OPTS ?=
fuzz: $(FUZZ_BIN)
	$(PYTHON) test/fuzz/make_seeds.py $(T)
	mkdir -p test/out/fuzz/$(T)/corpus
	$(SANENV):detect_leaks=1 $(FUZZ_BIN) -max_total_time=$(S) -timeout=10 -rss_limit_mb=3072 -max_len=$(FUZZ_LEN) \
	    -print_final_stats=1 -artifact_prefix=test/out/fuzz/$(T)/ $(FUZZ_OPTS) \
	    test/out/fuzz/$(T)/corpus test/out/fuzz/$(T)/seeds

build/fuzz/fuzz_%: test/fuzz/fuzz_%.c test/fuzz/fuzz_image.c $(LIBSRC) $(HEADERS)
	mkdir -p build/fuzz
	$(SAN_CC) $(WARN) $(SANITIZE) -fsanitize=fuzzer -I. -o $@ $< $(LIBSRC) -lm

.PHONY: test-asan fuzz
