// Chat-template family recognition by the markers each family's template must contain and
// the markers of variants that render differently.
#include "chat_template_family.hpp"

namespace moepack {
namespace {

bool has(std::string_view text, std::string_view marker) { return text.find(marker) != std::string_view::npos; }

}  // namespace

ChatFormat detect_chat_format(std::string_view t) {
    if (t.empty()) return ChatFormat::none;
    // Qwen3: ChatML with <think> handling and the enable_thinking switch. Earlier ChatML
    // templates (Qwen2.5 adds a default system prompt) render differently.
    if (has(t, "<|im_start|>") && has(t, "reasoning_content") && has(t, "enable_thinking") &&
        has(t, "<tool_response>"))
        return ChatFormat::chatml_qwen3;
    // Llama 3 (3.0); 3.1 and later add a dated system header and tool prompts.
    if (has(t, "<|start_header_id|>") && has(t, "<|eot_id|>") && !has(t, "Cutting Knowledge Date") &&
        !has(t, "ipython"))
        return ChatFormat::llama3;
    // Mistral [INST] (Llama 2 / Mistral v0.1 / Mixtral); later Mistral templates carry tool
    // and system-prompt control tokens.
    if (has(t, "[INST]") && has(t, "[/INST]") && !has(t, "[AVAILABLE_TOOLS]") && !has(t, "[SYSTEM_PROMPT]") &&
        !has(t, "<<SYS>>"))
        return ChatFormat::mistral_inst;
    // DeepSeek-V3; the R1 template strips <think> sections from history.
    // (U+FF5C fullwidth bar, U+2581 lower block as in the template)
    if (has(t, "<\uFF5CUser\uFF5C>") && has(t, "<\uFF5CAssistant\uFF5C>") && has(t, "tool\u2581outputs\u2581begin") &&
        !has(t, "</think>"))
        return ChatFormat::deepseek_v3;
    // GPT-OSS harmony.
    if (has(t, "<|start|>") && has(t, "<|channel|>") && has(t, "<|message|>") && has(t, "Valid channels"))
        return ChatFormat::gpt_oss_harmony;
    return ChatFormat::unknown;
}

const char* to_string(ChatFormat f) {
    switch (f) {
        case ChatFormat::none: return "none";
        case ChatFormat::unknown: return "unknown";
        case ChatFormat::chatml_qwen3: return "chatml_qwen3";
        case ChatFormat::llama3: return "llama3";
        case ChatFormat::mistral_inst: return "mistral_inst";
        case ChatFormat::deepseek_v3: return "deepseek_v3";
        case ChatFormat::gpt_oss_harmony: return "gpt_oss_harmony";
    }
    return "invalid";
}

}  // namespace moepack
