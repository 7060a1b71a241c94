# strata — build, test and run.  `make test` is the first command on a fresh
# Debian 12 machine: it installs the Debian packages it needs, builds, and tests.

BUILD   ?= build
SHARED  ?= $(abspath ../shared)
CC      ?= cc
PKGS    := jansson libpcre2-8 libutf8proc openblas zlib
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

OPTFLAGS ?= -O2
CFLAGS  := $(OPTFLAGS) -std=c11 -g -Wall -Wextra -Werror -D_GNU_SOURCE -pthread \
           -Iengine/include -Iengine $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS  := $(PKG_LIBS) -lm -pthread
SERVER_LIBS = $(shell pkg-config --libs libmicrohttpd libuv 2>/dev/null)

ENGINE_SRC := $(shell find engine -name '*.c' | sort)
TOOLS_SRC  := $(sort $(wildcard tools/*.c))
SERVER_SRC := $(sort $(wildcard server/*.c))
TEST_SRC   := $(sort $(wildcard tests/*.c))
BENCH_SRC  := $(sort $(wildcard bench/*.c))

ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/obj/%.o)
TOOLS_OBJ  := $(TOOLS_SRC:%.c=$(BUILD)/obj/%.o)
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/obj/%.o)
TEST_OBJ   := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)
BENCH_BIN  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench_%)

LIB := $(BUILD)/libstrata.a
CLI := $(BUILD)/strata
SERVER := $(BUILD)/strata-server
TESTS := $(BUILD)/strata-tests

.PHONY: all deps test asan bench clean valgrind run loadtest chaos fuzz
MODEL ?= models/strata-demo
PORT  ?= 8080
all: $(LIB) $(CLI) $(SERVER)

deps:
	@scripts/install-deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(CLI): $(TOOLS_OBJ) $(LIB)
	$(CC) $(CFLAGS) -o $@ $(TOOLS_OBJ) $(LIB) $(LDLIBS)

$(SERVER): $(SERVER_OBJ) $(LIB)
	$(CC) $(CFLAGS) -o $@ $(SERVER_OBJ) $(LIB) $(LDLIBS) $(SERVER_LIBS)

# The tests also link the server's code (not its main) and the fuzz targets, whose
# saved crashing inputs they replay.
SERVER_CORE_OBJ := $(filter-out $(BUILD)/obj/server/main.o,$(SERVER_OBJ))
FUZZ_TARGETS_OBJ := $(BUILD)/obj/fuzz/targets.o
$(FUZZ_TARGETS_OBJ): CFLAGS += -Iserver

$(TESTS): $(TEST_OBJ) $(FUZZ_TARGETS_OBJ) $(SERVER_CORE_OBJ) $(LIB)
	$(CC) $(CFLAGS) -o $@ $(TEST_OBJ) $(FUZZ_TARGETS_OBJ) $(SERVER_CORE_OBJ) $(LIB) $(LDLIBS) $(SERVER_LIBS) -lcriterion

$(BUILD)/bench_%: bench/%.c $(LIB) $(BUILD)/obj/tests/http_client.o
	$(CC) $(CFLAGS) -Itests -o $@ $< $(BUILD)/obj/tests/http_client.o $(LIB) $(LDLIBS)

# Tests find the fixtures through STRATA_SHARED and the CLI through STRATA_CLI.
TEST_ENV = STRATA_SHARED=$(SHARED) STRATA_CLI=$(abspath $(CLI)) STRATA_SERVER=$(abspath $(SERVER)) STRATA_ROOT=$(CURDIR)

test: deps
	@$(MAKE) --no-print-directory all $(TESTS)
	tests/openai/run.sh
	$(TEST_ENV) $(TESTS) $(TEST_ARGS)
	$(TEST_ENV) /usr/bin/python3 tests/python/test_client.py

# AddressSanitizer + UndefinedBehaviorSanitizer build of everything, in its own tree.
ASAN_OPTFLAGS := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
ASAN_ENV := ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0
asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan OPTFLAGS="$(ASAN_OPTFLAGS)" all build/asan/strata-tests
	STRATA_SHARED=$(SHARED) STRATA_CLI=$(abspath build/asan/strata) STRATA_SERVER=$(abspath build/asan/strata-server) STRATA_ROOT=$(CURDIR) \
	  $(ASAN_ENV) build/asan/strata-tests $(TEST_ARGS)

# Leak check of the engine's tests (the HTTP suites start servers: see make asan).
VALGRIND_SUITES ?= error checkpoints hooks cache session prefix_cache scheduler sampler constraint tool_calls reasoning rank interventions hybrid_small moe_small tied_small
valgrind: all $(TESTS)
	@for s in $(VALGRIND_SUITES); do \
	  $(TEST_ENV) valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=1 \
	    --trace-children=yes --trace-children-skip=/bin/sh,/usr/bin/sh $(TESTS) --jobs 1 --filter "$$s/*" || exit 1; \
	done

bench: deps
	@$(MAKE) --no-print-directory all $(BENCH_BIN)
	@for b in $(BENCH_BIN); do STRATA_SHARED=$(SHARED) STRATA_CLI=$(abspath $(CLI)) $$b || exit 1; done

# A bounded load run against a server on 127.0.0.1 (see loadtest/loadtest.c).
$(BUILD)/loadtest: loadtest/loadtest.c $(LIB) $(BUILD)/obj/tests/http_client.o
	$(CC) $(CFLAGS) -Itests -o $@ $< $(BUILD)/obj/tests/http_client.o $(LIB) $(LDLIBS)

loadtest: deps
	@$(MAKE) --no-print-directory all $(BUILD)/loadtest
	STRATA_SERVER=$(abspath $(SERVER)) $(BUILD)/loadtest

# Races on one server with tight limits, built with ASan + UBSan (see loadtest/chaos.py).
CHAOS_SECONDS ?= 60
chaos: deps
	@$(MAKE) --no-print-directory BUILD=build/asan OPTFLAGS="$(ASAN_OPTFLAGS)" all
	$(ASAN_ENV) /usr/bin/python3 loadtest/chaos.py build/asan/strata-server --seconds $(CHAOS_SECONDS) --model $(MODEL)
	$(ASAN_ENV) /usr/bin/python3 loadtest/chaos.py build/asan/strata-server --seconds 20 --model $(MODEL) --stop-midway
	$(ASAN_ENV) /usr/bin/python3 loadtest/chaos.py build/asan/strata-server --seconds 20 --model $(MODEL) --kill-midway

# libFuzzer harnesses (fuzz/): the engine and the server's parsers built with clang and
# ASan + UBSan into build/fuzz, one binary per target, each run FUZZ_SECONDS.
include fuzz/fuzz.mk

# Serve MODEL (default: the built-in strata-demo) on 127.0.0.1:PORT.
run: deps
	@$(MAKE) --no-print-directory all
	$(SERVER) --model $(MODEL) --port $(PORT) $(ARGS)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
