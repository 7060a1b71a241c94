/*
 * tool_calls.h — OpenAI function calling over a chat template's own tool-call
 * syntax: which syntax the checkpoint's template writes calls in (found by rendering
 * one), how much of a streamed text may go out before a call might begin, and the
 * calls of a finished text as OpenAI's tool_calls array.
 */
#ifndef STRATA_SERVER_TOOL_CALLS_H
#define STRATA_SERVER_TOOL_CALLS_H

#include <jansson.h>
#include <stddef.h>

#include "strata.h"

typedef enum tool_syntax {
    TOOL_SYNTAX_NONE = 0,       /* the template writes no tool calls */
    TOOL_SYNTAX_XML,            /* <tool_call><function=NAME><parameter=P>V</parameter>... (Nemotron 3, Qwen3-Coder) */
    TOOL_SYNTAX_JSON_TAG,       /* <tool_call>{"name": ..., "arguments": {...}}</tool_call> (Hermes, Qwen 2.5) */
    TOOL_SYNTAX_JSON_LIST       /* <TOOLCALL>[{"name": ..., "arguments": {...}}, ...]</TOOLCALL> (Nemotron Nano 2) */
} tool_syntax;

/* Render an assistant turn with one call through tmpl and see how it is written. */
tool_syntax tool_syntax_detect(const strata_template *tmpl);
const char *tool_syntax_name(tool_syntax s);

/* Bytes of text[0..len) that may be streamed as content now: all of it up to the
 * first call's marker, less a tail that may be the start of one. */
size_t tool_content_limit(tool_syntax s, const char *text, size_t len);

/* The calls of a finished text as OpenAI's tool_calls array (new reference; ids
 * "call_<id_stem>_<i>"), or NULL when it holds none, or a malformed one (then the
 * text stays content). *content_len: the bytes before the first call, trailing
 * whitespace dropped. tools (the request's, may be NULL) types XML parameter values:
 * a string parameter (or a string enum, or one not declared) keeps its text, others
 * are read as JSON. */
json_t *tool_calls_parse(tool_syntax s, const json_t *tools, const char *text, size_t len, const char *id_stem,
                         size_t *content_len);

#endif
