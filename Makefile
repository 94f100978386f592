# clip.c - make builds everything a user needs: the `clip` command and libclip.a
CC      ?= cc
CFLAGS  ?= -O3 -march=native -mprefer-vector-width=512 -ffp-contract=fast
OPENMP  ?= -fopenmp
PYTHON  ?= /usr/bin/python3
PREFIX  ?= /usr/local
EMCC    ?= emcc
WARN     = -std=c99 -Wall -Wextra -pedantic
LIBSRC   = clip.c tokenizer.c image.c tensor.c
HEADERS  = clip.h unicode_tables.h

all: clip libclip.a

clip: main.c $(LIBSRC) $(HEADERS)
	$(CC) $(WARN) $(CFLAGS) $(OPENMP) -o $@ main.c $(LIBSRC) -lm

libclip.a: $(LIBSRC) $(HEADERS)
	rm -rf build/lib && mkdir -p build/lib
	cd build/lib && $(CC) $(WARN) $(CFLAGS) $(OPENMP) -I../.. -c $(addprefix ../../,$(LIBSRC))
	$(AR) rcs $@ build/lib/*.o

# experiment 1 on the demo photo with openai/clip-vit-base-patch32 (fetched once into models/)
DEMO_MODEL = models/clip-vit-base-patch32.bin
demo: clip
	@test -f $(DEMO_MODEL) || python3 convert.py openai/clip-vit-base-patch32 -o $(DEMO_MODEL)
	./clip match -m $(DEMO_MODEL) -i data/cat.png -t "a photo of a cat" -t "a photo of a dog" \
	    -t "a photo of an airplane" -t "一张彩色的猫图片" --html models/demo.html
	@echo "wrote models/demo.html"

test: clip
	sh test/run.sh

bench: clip
	$(PYTHON) test/bench.py

clean:
	rm -rf clip libclip.a build test/out clip.js clip.wasm web/clip.js web/clip.wasm

install: all
	mkdir -p $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include
	cp clip $(DESTDIR)$(PREFIX)/bin/
	cp libclip.a $(DESTDIR)$(PREFIX)/lib/
	cp clip.h $(DESTDIR)$(PREFIX)/include/

.PHONY: all demo test bench clean install
