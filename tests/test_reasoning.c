/*
 * test_reasoning.c — reasoning_format "deepseek"'s text side (server/reasoning.c):
 * where a prompt leaves <think> open, where an answer's reasoning and content are,
 * and that a streamed split only ever grows into the final one, whatever the
 * chunking (so the deltas add up to the answer).
 */
#include <criterion/criterion.h>
#include <string.h>

#include "../server/reasoning.h"

static reasoning_split split(const char *text, int opened, int final)
{
    reasoning_split s;
    reasoning_split_text(text, strlen(text), opened, final, &s);
    return s;
}

static void expect(const char *text, int opened, const char *reasoning, const char *content)
{
    reasoning_split s = split(text, opened, 1);
    cr_assert_eq(s.r_end - s.r_begin, strlen(reasoning), "%s: reasoning %zu..%zu", text, s.r_begin, s.r_end);
    cr_assert_eq(memcmp(text + s.r_begin, reasoning, strlen(reasoning)), 0, "%s", text);
    cr_assert_str_eq(text + s.c_begin, content, "%s", text);
}

Test(reasoning, a_prompt_leaves_the_block_open_or_not)
{
    cr_assert(reasoning_opens("<|im_start|>assistant\n<think>\n", 30));
    cr_assert_not(reasoning_opens("<|im_start|>assistant\n<think></think>", 37));
    cr_assert_not(reasoning_opens("<|im_start|>assistant\n", 22));
    const char *history = "<think>a</think>b<|im_end|>\n<|im_start|>assistant\n<think>\n";
    cr_assert(reasoning_opens(history, strlen(history)), "the last block counts");
}

Test(reasoning, the_parts_of_a_finished_answer)
{
    expect("I should greet.</think>\n\nHello!", 1, "I should greet.", "Hello!");
    expect("still thinking", 1, "still thinking", "");
    expect("<think>plan</think>answer", 0, "plan", "answer");
    expect("  \n<think>plan</think>  answer", 0, "plan", "answer");
    expect("just an answer", 0, "", "just an answer");
    expect("<thi", 0, "", "<thi");                          /* ended before it became a tag */
    expect("thinking </thi", 1, "thinking </thi", "");     /* the same inside */
    expect("a</think>b</think>c", 1, "a", "b</think>c");    /* the first close ends it */
    expect("</think>", 1, "", "");
}

/* Every chunking of the text: the streamed parts never shrink, never run past the
 * final ones, and end equal to them. */
static void streams_into(const char *text, int opened)
{
    size_t n = strlen(text);
    reasoning_split fin = split(text, opened, 1), prev = {0, 0, 0};
    for (size_t len = 0; len <= n; len++) {
        reasoning_split s;
        reasoning_split_text(text, len, opened, 0, &s);
        size_t r = s.r_end - s.r_begin, c = len - s.c_begin;
        if (r)
            cr_assert_eq(s.r_begin, fin.r_begin, "%s at %zu", text, len);
        cr_assert_leq(r, fin.r_end - fin.r_begin, "%s at %zu", text, len);
        cr_assert_geq(r, prev.r_end - prev.r_begin, "%s at %zu: the reasoning shrank", text, len);
        if (c)
            cr_assert_eq(s.c_begin, fin.c_begin, "%s at %zu: content from %zu, finally %zu", text, len, s.c_begin,
                         fin.c_begin);
        prev = s;
    }
}

Test(reasoning, a_streamed_split_grows_into_the_final_one)
{
    const char *cases[] = {"I should greet.</think>\n\nHello!", "a </thin k</think> b", "<think>plan</think>answer",
                           " <think>x</think>\n y", "no tags at all", "<thi", "</think>", "x</think></think>"};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        streams_into(cases[i], 1);
        streams_into(cases[i], 0);
    }
}
