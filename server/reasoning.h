/*
 * reasoning.h — a chat answer's reasoning apart from its content, for
 * reasoning_format "deepseek" (the field DeepSeek's API, llama.cpp and vLLM send
 * thinking in): Nemotron Nano 2 and Nemotron 3 think between <think> and
 * </think>, a block their templates open at the end of the prompt when thinking is
 * on (enable_thinking) or the model writes first.
 */
#ifndef STRATA_SERVER_REASONING_H
#define STRATA_SERVER_REASONING_H

#include <stddef.h>

/* A reasoning_format's name: "none" (0) or "deepseek" (1); -1 for anything else. */
int reasoning_format_parse(const char *name);

/* Whether a rendered prompt leaves a <think> block open: the answer starts inside. */
int reasoning_opens(const char *prompt, size_t len);

/* Where the parts of text[0..len) are: the reasoning [r_begin, r_end), the content
 * [c_begin, len). In an answer still growing (final 0), what may yet change is left
 * out of both: a tail that may start </think>, whitespace that may precede the
 * content, a start that may still become <think>. Parts only grow as the text does:
 * a split of a longer text extends that of its prefix. */
typedef struct reasoning_split {
    size_t r_begin, r_end, c_begin;
} reasoning_split;

void reasoning_split_text(const char *text, size_t len, int opened, int final, reasoning_split *out);

#endif
