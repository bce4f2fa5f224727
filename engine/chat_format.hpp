// Chat prompts: a list of messages (system / user / assistant / tool) rendered into the
// prompt text a model family expects, character for character what its Jinja chat template
// renders through transformers' apply_chat_template. The family comes from tokenizer.bin;
// a template of no supported family is an error, never a guess.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tokenizer_format.hpp"

namespace moepack::engine {

class Tokenizer;

struct ToolCall {
    std::string name;
    std::string arguments;  // JSON text, inserted as the templates insert a string
};

struct ChatMessage {
    std::string role;                    // system, user, assistant or tool
    std::optional<std::string> content;  // may be absent only for an assistant message
    std::optional<std::string> reasoning;  // assistant thinking (Qwen3 <think>, GPT-OSS analysis)
    std::vector<ToolCall> tool_calls;    // assistant only
};

struct ChatOptions {
    bool add_generation_prompt = true;
    std::optional<bool> enable_thinking;   // Qwen3's switch; unset = the template's default
    std::string current_date;              // YYYY-MM-DD, GPT-OSS system header
    std::string reasoning_effort = "medium";  // GPT-OSS: low, medium or high
};

// Texts of the BOS and EOS tokens that templates write.
struct ChatSpecialTokens {
    std::string bos, eos;
};

std::string render_chat(ChatFormat format, const ChatSpecialTokens& tokens, std::span<const ChatMessage> messages,
                        const ChatOptions& options);

// The same with the format and special tokens of `tokenizer`.
std::string render_chat(const Tokenizer& tokenizer, std::span<const ChatMessage> messages,
                        const ChatOptions& options);

}  // namespace moepack::engine
