# fuzz.mk — `make fuzz`: libFuzzer harnesses (clang, ASan + UBSan) for every input
# strata takes from outside, one binary per target of fuzz/targets.c. Each runs
# FUZZ_SECONDS (default 60) from its seeds: the small files in fuzz/seeds/<target>
# plus fixtures of $(SHARED) gathered at run time into build/fuzz/seeds. New inputs
# go to build/fuzz/corpus/<target>, crashes to build/fuzz/crashes/<target>; the
# executions per second of each run are collected in build/fuzz/report.txt.
# `make -j fuzz` runs the targets in parallel; FUZZ_TARGETS="a b" runs a subset.

FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build/fuzz
FUZZ_ALL     := safetensors config tokenizer_json encode chat_template completions chat activations \
                sessions session_import json_schema reasoning
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS  := -O1 -g -std=c11 -Wall -Wextra -D_GNU_SOURCE -pthread -Iengine/include -Iengine -Iserver \
                $(PKG_CFLAGS) $(FUZZ_SAN)
FUZZ_LIBS    := $(PKG_LIBS) $(SERVER_LIBS) -lm -pthread
FUZZ_SRC     := $(ENGINE_SRC) $(filter-out server/main.c,$(SERVER_SRC)) fuzz/targets.c
FUZZ_OBJ     := $(FUZZ_SRC:%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_BIN     := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_MAXLEN_tokenizer_json := 65536
FUZZ_MAXLEN_chat_template  := 32768
FUZZ_MAXLEN_session_import := 65536
FUZZ_MAXLEN_safetensors    := 65536

$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_DIR)/fuzz_%: fuzz/harness.c $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -DFUZZ_TARGET='"$*"' -o $@ $< $(FUZZ_OBJ) $(FUZZ_LIBS)

$(FUZZ_DIR)/seed_session: fuzz/seed_session.c $(LIB)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDLIBS)

# Seeds: ours, then the fixtures (file names prefixed so that they do not collide).
fuzz-seeds: $(FUZZ_DIR)/seed_session
	@rm -rf $(FUZZ_DIR)/seeds && for t in $(FUZZ_ALL); do mkdir -p $(FUZZ_DIR)/seeds/$$t $(FUZZ_DIR)/corpus/$$t \
	  $(FUZZ_DIR)/crashes/$$t; cp fuzz/seeds/$$t/* $(FUZZ_DIR)/seeds/$$t/ 2>/dev/null || true; done
	@$(FUZZ_DIR)/seed_session $(MODEL) $(FUZZ_DIR)/seeds/session_import
	@cp $(FUZZ_DIR)/seeds/session_import/* $(FUZZ_DIR)/seeds/safetensors/
	@n=0; for f in $(SHARED)/fixtures/models/*/config.json $(SHARED)/fixtures/real/*/config.json $(MODEL)/config.json; do \
	  n=$$((n+1)); cp $$f $(FUZZ_DIR)/seeds/config/fixture$$n.json; done
	@n=0; for f in $(SHARED)/fixtures/models/*/tokenizer.json $(MODEL)/tokenizer.json; do \
	  n=$$((n+1)); [ $$(stat -c %s $$f) -le $(FUZZ_MAXLEN_tokenizer_json) ] && cp $$f $(FUZZ_DIR)/seeds/tokenizer_json/fixture$$n.json; done; true
	@n=0; for f in $(SHARED)/fixtures/chat_templates/*.jinja $(SHARED)/fixtures/real/*/*.jinja; do \
	  n=$$((n+1)); cp $$f $(FUZZ_DIR)/seeds/chat_template/fixture$$n.jinja; done
	@head -c 4000 $(SHARED)/fixtures/tokenizers/corpus.jsonl > $(FUZZ_DIR)/seeds/encode/corpus.txt

fuzz-run-%: $(FUZZ_DIR)/fuzz_% fuzz-seeds
	@echo "fuzz: $* for $(FUZZ_SECONDS) s"
	@STRATA_MODEL=$(MODEL) $< -max_total_time=$(FUZZ_SECONDS) -timeout=20 -rss_limit_mb=4096 \
	  $(if $(FUZZ_MAXLEN_$*),-max_len=$(FUZZ_MAXLEN_$*)) -print_final_stats=1 \
	  -artifact_prefix=$(FUZZ_DIR)/crashes/$*/ $(FUZZ_DIR)/corpus/$* $(FUZZ_DIR)/seeds/$* \
	  > $(FUZZ_DIR)/$*.log 2>&1; rc=$$?; \
	  execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $(FUZZ_DIR)/$*.log); \
	  secs=$$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' $(FUZZ_DIR)/$*.log); \
	  line="$* $${execs:-?} executions in $${secs:-?} s = $$(( $${execs:-0} / ( $${secs:-1} > 0 ? $${secs:-1} : 1 ) )) exec/s, exit $$rc"; \
	  echo "fuzz: $$line"; echo "$$line" >> $(FUZZ_DIR)/report.txt; \
	  [ $$rc -eq 0 ] || { tail -40 $(FUZZ_DIR)/$*.log; exit 1; }

fuzz: deps
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz needs $(FUZZ_CC) (apt-get install clang-14 libclang-rt-14-dev)"; exit 1; }
	@$(MAKE) --no-print-directory $(LIB) $(FUZZ_BIN)
	@rm -f $(FUZZ_DIR)/report.txt
	@$(MAKE) --no-print-directory $(FUZZ_TARGETS:%=fuzz-run-%)
	@cat $(FUZZ_DIR)/report.txt

.PHONY: fuzz-seeds
.PRECIOUS: $(FUZZ_DIR)/fuzz_%
.SECONDARY: $(FUZZ_OBJ)
-include $(wildcard $(FUZZ_OBJ:.o=.d))
