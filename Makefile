# resattn — build, test and run.
#   make            build build/resattn
#   make run        install missing Debian packages (the run set), build, serve the built-in model on :8080
#   make test       install missing Debian packages (the test set), build, run every test
#   make asan       the unit and integration tests under AddressSanitizer + UBSan (build-asan/)
#   make format     clang-format every C file in place
CC      ?= cc
BUILD   ?= build
OPT     ?= -O2
NPROC   := $(shell nproc 2>/dev/null || echo 2)
# What the binary links; the tests add Check and libcurl (installed by `make test` only).
# GnuTLS comes with libmicrohttpd (libmicrohttpd-dev depends on libgnutls28-dev); the
# healthcheck command uses it directly for its HTTPS probe, the gRPC server for TLS.
# nghttp2 and protobuf-c: the gRPC server (server/grpc/).
PKGS     = jansson libmicrohttpd openblas libpng libjpeg gnutls libnghttp2 libprotobuf-c
CFLAGS  += -std=c11 $(OPT) -g -Wall -Wextra -Werror -D_GNU_SOURCE -pthread -Iinclude -Icore -Iserver \
           -I$(BUILD)/gen \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -pthread
CHECK_LIBS = $(shell pkg-config --libs check libcurl 2>/dev/null)

CORE_SRC   = $(wildcard core/*/*.c)
SERVER_SRC = $(filter-out server/cli/main.c,$(wildcard server/*/*.c))
TEST_SRC   = $(wildcard tests/check_*.c tests/util_*.c)
SUITES     = $(patsubst tests/check_%.c,%,$(filter-out tests/check_main.c,$(wildcard tests/check_*.c)))
CORE_OBJ   = $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
# The gRPC messages: protoc-c generates C from server/grpc/proto/*.proto into $(BUILD)/gen
# (not committed, not formatted).
PROTOS     = $(wildcard server/grpc/proto/*.proto)
GEN_C      = $(PROTOS:server/grpc/proto/%.proto=$(BUILD)/gen/%.pb-c.c)
GEN_H      = $(GEN_C:.c=.h)
SERVER_OBJ = $(SERVER_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/models/default_model.o \
             $(GEN_C:$(BUILD)/gen/%.c=$(BUILD)/obj/gen/%.o)
TEST_OBJ   = $(TEST_SRC:%.c=$(BUILD)/obj/%.o)
HEADERS    = $(wildcard include/resattn/*.h core/*/*.h server/*/*.h server/*/*/*.h tests/*.h)
C_FILES    = $(wildcard include/resattn/*.h core/*/*.[ch] server/*/*.[ch] tests/*.[ch] tests/fuzz/*.[ch] tests/bench/*.[ch])

.PHONY: all deps deps-run run test unit asan grpc-test format format-check clean fixtures fuzz
all: $(BUILD)/resattn

# Debian packages: `make run` needs only the run set, `make test` the test set
# (tools/ensure-deps.sh). Both then build in a sub-make, so that the pkg-config flags above
# are read after the packages are installed.
deps-run:
	@tools/ensure-deps.sh run
deps:
	@tools/ensure-deps.sh test

$(BUILD)/obj/%.o: %.c $(HEADERS) $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: server/grpc/proto/%.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen -Iserver/grpc/proto $<
.SECONDARY: $(GEN_C) $(GEN_H)
# generated code: compiled without -Werror (its warnings are protoc-c's, not ours)
$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -Werror,$(CFLAGS)) -c $< -o $@

# The built-in model is linked into the binary (models/default.safetensors).
$(BUILD)/obj/models/default_model.o: models/default_model.S models/default.safetensors
	@mkdir -p $(dir $@)
	$(CC) -c $< -o $@

# The web page served at / is linked into the binary: server/http/web/index.html with the
# example pictures (models/examples/*.png) embedded as data: URLs for its thumbnails.
WEB_EXAMPLES = $(sort $(wildcard models/examples/*.png))
SERVER_OBJ += $(BUILD)/obj/server/http/web/index_html.o
$(BUILD)/web/index.html: server/http/web/index.html server/http/web/embed_examples.sh $(WEB_EXAMPLES)
	@mkdir -p $(dir $@)
	server/http/web/embed_examples.sh $< $(WEB_EXAMPLES) > $@.tmp && mv $@.tmp $@
$(BUILD)/obj/server/http/web/index_html.o: server/http/web/index_html.S $(BUILD)/web/index.html
	@mkdir -p $(dir $@)
	$(CC) -DRESATTN_WEB_PAGE='"$(BUILD)/web/index.html"' -c $< -o $@

# The git commit for resattn_build_info ("unknown" outside a git checkout, as in the container
# build); rewritten only when it changes, so that only metrics.o is rebuilt.
$(BUILD)/build_commit.h: FORCE
	@mkdir -p $(dir $@)
	@printf '#define RESATTN_COMMIT "%s"\n' \
	  "$$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)" >$@.tmp && \
	  (cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@)
$(BUILD)/obj/server/runtime/metrics.o: $(BUILD)/build_commit.h
$(BUILD)/obj/server/runtime/metrics.o: CFLAGS += -I$(BUILD)
.PHONY: FORCE
FORCE:

# One SUITE(x) line per tests/check_x.c, for tests/check_main.c.
$(BUILD)/suites.h: $(wildcard tests/check_*.c)
	@mkdir -p $(dir $@)
	@printf '$(foreach s,$(SUITES),SUITE($(s))\n)' > $@.tmp && \
	  (cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@)

$(BUILD)/obj/tests/check_main.o: $(BUILD)/suites.h
$(BUILD)/obj/tests/%.o: CFLAGS += -I$(BUILD) $(shell pkg-config --cflags check libcurl 2>/dev/null)

$(BUILD)/libresattn.a: $(CORE_OBJ)
	ar rcs $@ $^

$(BUILD)/resattn: $(BUILD)/obj/server/cli/main.o $(SERVER_OBJ) $(BUILD)/libresattn.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/check_resattn: $(TEST_OBJ) $(SERVER_OBJ) $(BUILD)/libresattn.a
	$(CC) $(CFLAGS) -o $@ $^ $(CHECK_LIBS) $(LDLIBS)

# The numeric suites run twice: on this CPU's fastest path, then on the portable one
# (OpenBLAS GEMMs, generic Winograd transforms, the per-element JSON number scanner) that
# CPUs without AVX-512 take; the bf16 suite too, for BF16 models whose FP32 layers take it.
unit: $(BUILD)/check_resattn $(BUILD)/resattn
	RESATTN_BIN=$(abspath $(BUILD)/resattn) $(BUILD)/check_resattn
	@for s in parity ops winograd bf16; do echo "== portable path: suite $$s"; \
	  RESATTN_GEMM=openblas RESATTN_WINOGRAD=generic CK_RUN_SUITE=$$s RESATTN_BIN=$(abspath $(BUILD)/resattn) \
	  $(BUILD)/check_resattn || exit 1; done
	@echo "== portable path: suite protocol"; \
	  RESATTN_JSON_SCAN=portable CK_RUN_SUITE=protocol $(BUILD)/check_resattn

test: deps
	$(MAKE) -j$(NPROC) all $(BUILD)/check_resattn
	$(MAKE) unit
	tests/integration/prometheus_scrape.sh $(BUILD)/resattn
	python3 tests/integration/readme_examples.py $(BUILD)/resattn
	$(MAKE) grpc-test
	RESATTN_BIN=$(abspath $(BUILD)/resattn) tests/browser/run.sh
	deploy/validate.sh
	$(MAKE) asan

# The gRPC service against a real gRPC client (python3-grpcio); `make asan` runs it on the
# sanitizer build too.
grpc-test: $(BUILD)/resattn
	/usr/bin/python3 tests/grpc/test_grpc.py $(BUILD)/resattn

ASAN_OPT = OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined"
asan:
	$(MAKE) -j$(NPROC) BUILD=build-asan $(ASAN_OPT) unit
	$(MAKE) BUILD=build-asan $(ASAN_OPT) grpc-test

# The quickstart server listens on loopback; containers set RESATTN_HOST=0.0.0.0.
HOST ?= 127.0.0.1
PORT ?= 8080
run: deps-run
	$(MAKE) -j$(NPROC) all
	$(BUILD)/resattn serve --host $(HOST) --port $(PORT)

format:
	clang-format -i $(C_FILES)

format-check:
	clang-format --dry-run --Werror $(C_FILES)

fixtures:
	/usr/bin/python3 tools/make_fixtures.py

# libFuzzer harnesses (tests/fuzz/README.md), built with clang in $(BUILD)-fuzz/ so the
# instrumented objects never mix with the normal build. Each runs FUZZ_SECONDS on a copy of
# its seed corpus tests/fuzz/corpus_<name>/; crashes are written to $(BUILD)-fuzz/crash-*.
FUZZERS      = image v2_json v2_binary tfs npy model json_scan grpc
FUZZ_SECONDS ?= 60
FUZZ_BUILD    = $(BUILD)-fuzz
.PHONY: fuzz fuzz-build fuzz-short valgrind
fuzz-build:
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=clang OPT="-O1 -g -fsanitize=fuzzer-no-link,address,undefined" \
	  $(FUZZERS:%=$(FUZZ_BUILD)/fuzz_%)
$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) $(SERVER_OBJ) $(BUILD)/libresattn.a
	$(CC) $(CFLAGS) -Itests/fuzz -fsanitize=fuzzer,address,undefined -o $@ $< $(SERVER_OBJ) \
	  $(BUILD)/libresattn.a $(LDLIBS)
fuzz: fuzz-build
	@set -e; for f in $(FUZZERS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$f; echo "== fuzz_$$f $(FUZZ_SECONDS) s"; \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 $(FUZZ_BUILD)/fuzz_$$f \
	    -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_BUILD)/crash-$$f- $(FUZZ_BUILD)/corpus/$$f tests/fuzz/corpus_$$f; \
	  done
fuzz-short:
	$(MAKE) FUZZ_SECONDS=20 fuzz

# The integration suites under valgrind memcheck (CK_FORK=no so valgrind sees the tests
# themselves); servers the tests start run under valgrind too (RESATTN_TEST_WRAPPER, read by
# tests/util_http.c), and a server with errors exits 99, which the tests' exit-0 checks catch.
# Left out by default (too slow under valgrind on 2 cores): parity, attention, ops, winograd
# (numeric kernels), server (its overload tests run big models; over 5 min, not finished) and
# security (over 5 min; libcurl's OpenSSL CA loading in the test client reports uninitialised
# reads, would need a suppression file).
VALGRIND        = valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
VALGRIND_SUITES ?= fuzz_regressions protocol loader multipart image attention_http
valgrind: $(BUILD)/check_resattn $(BUILD)/resattn
	@set -e; for s in $(VALGRIND_SUITES); do echo "== valgrind: suite $$s"; \
	  CK_FORK=no CK_RUN_SUITE=$$s CK_TIMEOUT_MULTIPLIER=10 RESATTN_BIN=$(abspath $(BUILD)/resattn) \
	  RESATTN_TEST_WRAPPER="$(VALGRIND)" $(VALGRIND) $(BUILD)/check_resattn; done

clean:
	rm -rf build build-asan
