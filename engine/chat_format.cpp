// Renderers of the supported chat-template families; each follows its reference template
// branch for branch, including where the template refuses a conversation.
#include "chat_format.hpp"

#include <cstdio>

#include "chat_template_family.hpp"
#include "error.hpp"
#include "tokenizer.hpp"
#include "utf8.hpp"

namespace moepack::engine {
namespace {

[[noreturn]] void refuse(ChatFormat f, const std::string& why) { fail("chat format ", to_string(f), ": ", why); }

const std::string& content_of(ChatFormat f, const ChatMessage& m, size_t index) {
    if (!m.content) refuse(f, concat("message ", index, " (", m.role, ") has no content"));
    return *m.content;
}

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
    return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// Python's str.strip(chars) / lstrip / rstrip for a set of ASCII characters.
std::string lstrip(const std::string& s, const char* chars) {
    const size_t b = s.find_first_not_of(chars);
    return b == std::string::npos ? "" : s.substr(b);
}
std::string rstrip(const std::string& s, const char* chars) {
    const size_t e = s.find_last_not_of(chars);
    return e == std::string::npos ? "" : s.substr(0, e + 1);
}
std::string strip(const std::string& s, const char* chars) { return lstrip(rstrip(s, chars), chars); }

// Python's str.strip() with no argument (what Jinja's trim filter does).
bool python_space(uint32_t cp) { return is_unicode_whitespace(cp) || (cp >= 0x1C && cp <= 0x1F); }
std::string python_trim(const std::string& s) {
    size_t b = 0, e = s.size();
    while (b < e && python_space(utf8_code_point_at(s, b))) b += utf8_length_at(s, b);
    while (e > b) {
        size_t p = e - 1;
        while (p > b && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
        if (!python_space(utf8_code_point_at(s, p))) break;
        e = p;
    }
    return s.substr(b, e - b);
}

// Python's json.dumps(s, ensure_ascii=False), which transformers' tojson filter calls.
std::string json_string(const std::string& s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out.push_back(static_cast<char>(c));
                }
        }
    }
    return out + "\"";
}

// ---- Qwen3 ChatML ----

std::string render_chatml_qwen3(std::span<const ChatMessage> msgs, const ChatOptions& opt) {
    constexpr ChatFormat f = ChatFormat::chatml_qwen3;
    std::string out;
    if (msgs[0].role == "system") out += "<|im_start|>system\n" + content_of(f, msgs[0], 0) + "<|im_end|>\n";
    // the last user turn that is not a wrapped tool response
    size_t last_query = msgs.size() - 1;
    for (size_t i = msgs.size(); i-- > 0;) {
        const ChatMessage& m = msgs[i];
        if (m.role != "user") continue;
        const std::string& c = content_of(f, m, i);
        if (!(starts_with(c, "<tool_response>") && ends_with(c, "</tool_response>"))) {
            last_query = i;
            break;
        }
    }
    for (size_t i = 0; i < msgs.size(); ++i) {
        const ChatMessage& m = msgs[i];
        const bool last = i + 1 == msgs.size();
        if (m.role == "user" || (m.role == "system" && i > 0)) {
            out += "<|im_start|>" + m.role + "\n" + content_of(f, m, i) + "<|im_end|>\n";
        } else if (m.role == "assistant") {
            std::string content = content_of(f, m, i);
            std::string reasoning;
            if (m.reasoning) {
                reasoning = *m.reasoning;
            } else if (const size_t close = content.find("</think>"); close != std::string::npos) {
                std::string before = rstrip(content.substr(0, close), "\n");
                const size_t open = before.rfind("<think>");
                reasoning = lstrip(open == std::string::npos ? before : before.substr(open + 7), "\n");
                content = lstrip(content.substr(content.rfind("</think>") + 8), "\n");
            }
            if (i > last_query && (last || !reasoning.empty()))
                out += "<|im_start|>assistant\n<think>\n" + strip(reasoning, "\n") + "\n</think>\n\n" +
                       lstrip(content, "\n");
            else
                out += "<|im_start|>assistant\n" + content;
            for (size_t k = 0; k < m.tool_calls.size(); ++k) {
                if (k > 0 || !content.empty()) out += "\n";
                out += "<tool_call>\n{\"name\": \"" + m.tool_calls[k].name + "\", \"arguments\": " +
                       m.tool_calls[k].arguments + "}\n</tool_call>";
            }
            out += "<|im_end|>\n";
        } else if (m.role == "tool") {
            if (i == 0 || msgs[i - 1].role != "tool") out += "<|im_start|>user";
            out += "\n<tool_response>\n" + content_of(f, m, i) + "\n</tool_response>";
            if (last || msgs[i + 1].role != "tool") out += "<|im_end|>\n";
        }
    }
    if (opt.add_generation_prompt) {
        out += "<|im_start|>assistant\n";
        if (opt.enable_thinking == false) out += "<think>\n\n</think>\n\n";
    }
    return out;
}

// ---- Llama 3 ----

std::string render_llama3(const ChatSpecialTokens& t, std::span<const ChatMessage> msgs) {
    std::string out = t.bos;
    for (const ChatMessage& m : msgs)  // the template prints an absent content as "None"
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + python_trim(m.content.value_or("None")) +
               "<|eot_id|>";
    // this template always opens the assistant turn
    return out + "<|start_header_id|>assistant<|end_header_id|>\n\n";
}

// ---- Mistral [INST] ----

std::string render_mistral_inst(const ChatSpecialTokens& t, std::span<const ChatMessage> msgs) {
    constexpr ChatFormat f = ChatFormat::mistral_inst;
    std::optional<std::string> system;
    size_t first = 0;
    if (msgs[0].role == "system") {
        system = content_of(f, msgs[0], 0);
        first = 1;
    }
    std::string out = t.bos;
    for (size_t i = first; i < msgs.size(); ++i) {
        const ChatMessage& m = msgs[i];
        if ((m.role == "user") != ((i - first) % 2 == 0))
            refuse(f, "after the optional system message, roles must alternate user/assistant");
        if (m.role == "user") {
            if (i == first && system) out += " [INST] " + *system + "\n\n" + content_of(f, m, i) + " [/INST]";
            else out += " [INST] " + content_of(f, m, i) + " [/INST]";
        } else if (m.role == "assistant") {
            out += " " + content_of(f, m, i) + t.eos;
        } else {
            refuse(f, "only user and assistant roles are supported after an optional first system message");
        }
    }
    return out;
}

// ---- DeepSeek-V3 ----

std::string render_deepseek_v3(const ChatSpecialTokens& t, std::span<const ChatMessage> msgs, const ChatOptions& opt) {
    constexpr ChatFormat f = ChatFormat::deepseek_v3;
    // tags are <｜...｜> (U+FF5C) with words joined by ▁ (U+2581)
    auto tag = [](const std::string& name) { return "<\uFF5C" + name + "\uFF5C>"; };
    const std::string sep = "\u2581";
    const std::string user = tag("User"), assistant = tag("Assistant"), eos = tag("end\u2581of\u2581sentence");
    auto words = [&](std::initializer_list<const char*> parts) {
        std::string s;
        for (const char* p : parts) s += (s.empty() ? "" : sep) + std::string(p);
        return tag(s);
    };
    std::string system;
    bool first_system = true;
    for (size_t i = 0; i < msgs.size(); ++i) {
        if (msgs[i].role != "system") continue;
        system += (first_system ? "" : "\n\n") + content_of(f, msgs[i], i);
        first_system = false;
    }
    std::string out = t.bos + system;
    bool tool_calls_started = false, in_tool_outputs = false, first_output = true;
    for (size_t i = 0; i < msgs.size(); ++i) {
        const ChatMessage& m = msgs[i];
        if (m.role == "user") {
            in_tool_outputs = false;
            out += user + content_of(f, m, i);
        } else if (m.role == "assistant" && !m.content) {
            in_tool_outputs = false;
            for (const ToolCall& call : m.tool_calls) {
                const std::string body = words({"tool", "call", "begin"}) + "function" + words({"tool", "sep"}) +
                                         call.name + "\n```json\n" + call.arguments + "\n```" +
                                         words({"tool", "call", "end"});
                if (!tool_calls_started) out += assistant + words({"tool", "calls", "begin"}) + body;
                else out += "\n" + body + words({"tool", "calls", "end"}) + eos;
                tool_calls_started = true;  // the template never resets it
            }
        } else if (m.role == "assistant") {
            if (in_tool_outputs) out += words({"tool", "outputs", "end"}) + *m.content + eos;
            else out += assistant + *m.content + eos;
            in_tool_outputs = false;
        } else if (m.role == "tool") {
            in_tool_outputs = true;
            const std::string body = words({"tool", "output", "begin"}) + content_of(f, m, i) + words({"tool", "output", "end"});
            if (first_output) out += words({"tool", "outputs", "begin"}) + body;
            else out += "\n" + body;
            first_output = false;
        }
    }
    if (in_tool_outputs) out += words({"tool", "outputs", "end"});
    else if (opt.add_generation_prompt) out += assistant;
    return out;
}

// ---- GPT-OSS harmony ----

std::string render_gpt_oss_harmony(std::span<const ChatMessage> msgs, const ChatOptions& opt) {
    constexpr ChatFormat f = ChatFormat::gpt_oss_harmony;
    if (opt.current_date.empty()) refuse(f, "the system header needs the current date");
    std::string out = "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
                      "Knowledge cutoff: 2024-06\nCurrent date: " + opt.current_date + "\n\nReasoning: " +
                      opt.reasoning_effort +
                      "\n\n# Valid channels: analysis, commentary, final. Channel must be included for every "
                      "message.<|end|>";
    size_t first = 0;
    if (msgs[0].role == "system") {
        const std::string& developer = content_of(f, msgs[0], 0);
        if (!developer.empty()) out += "<|start|>developer<|message|># Instructions\n\n" + developer + "\n\n<|end|>";
        first = 1;
    }
    const std::string analysis_tag = "<|channel|>analysis<|message|>", final_tag = "<|channel|>final<|message|>";
    std::optional<std::string> last_tool_call;
    for (size_t i = first; i < msgs.size(); ++i) {
        const ChatMessage& m = msgs[i];
        if (m.role == "assistant") {
            const std::string& content = content_of(f, m, i);
            auto has_channel_tags = [&](const std::string& s) {
                return s.find(analysis_tag) != std::string::npos || s.find(final_tag) != std::string::npos;
            };
            if (has_channel_tags(content) || (m.reasoning && has_channel_tags(*m.reasoning)))
                refuse(f, concat("message ", i, " contains <|channel|> tags; pass reasoning separately"));
            if (!m.tool_calls.empty()) {
                bool later_final = false;
                for (size_t k = i + 1; k < msgs.size(); ++k)
                    later_final = later_final || (msgs[k].role == "assistant" && msgs[k].tool_calls.empty());
                const std::string thinking = m.reasoning.value_or("");
                if (!content.empty() && !thinking.empty())
                    refuse(f, concat("message ", i, " has both content and reasoning beside a tool call"));
                if (!content.empty() && !later_final)
                    out += "<|start|>assistant" + analysis_tag + content + "<|end|>";
                else if (!thinking.empty() && !later_final)
                    out += "<|start|>assistant" + analysis_tag + thinking + "<|end|>";
                const ToolCall& call = m.tool_calls[0];
                out += "<|start|>assistant to=functions." + call.name + "<|channel|>commentary json<|message|>" +
                       json_string(call.arguments) + "<|call|>";
                last_tool_call = call.name;
            } else if (i + 1 == msgs.size() && !opt.add_generation_prompt) {
                if (m.reasoning) out += "<|start|>assistant" + analysis_tag + *m.reasoning + "<|end|>";
                out += "<|start|>assistant" + final_tag + content + "<|return|>";
            } else {
                out += "<|start|>assistant" + final_tag + content + "<|end|>";
                last_tool_call.reset();
            }
        } else if (m.role == "tool") {
            if (!last_tool_call) refuse(f, concat("message ", i, " is a tool result without a preceding tool call"));
            out += "<|start|>functions." + *last_tool_call + " to=assistant<|channel|>commentary<|message|>" +
                   json_string(content_of(f, m, i)) + "<|end|>";
        } else if (m.role == "user") {
            out += "<|start|>user<|message|>" + content_of(f, m, i) + "<|end|>";
        }  // a later system message is not rendered by this template
    }
    if (opt.add_generation_prompt) out += "<|start|>assistant";
    return out;
}

void check_messages(std::span<const ChatMessage> msgs) {
    if (msgs.empty()) fail("chat: no messages to render");
    for (size_t i = 0; i < msgs.size(); ++i) {
        const ChatMessage& m = msgs[i];
        if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool")
            fail("chat: message ", i, " has role '", m.role, "', expected system, user, assistant or tool");
        if (m.role != "assistant" && (!m.content || !m.tool_calls.empty() || m.reasoning))
            fail("chat: message ", i, " (", m.role, ") needs content and may not carry reasoning or tool calls");
    }
}

}  // namespace

std::string render_chat(ChatFormat format, const ChatSpecialTokens& tokens, std::span<const ChatMessage> messages,
                        const ChatOptions& options) {
    check_messages(messages);
    switch (format) {
        case ChatFormat::chatml_qwen3: return render_chatml_qwen3(messages, options);
        case ChatFormat::llama3: return render_llama3(tokens, messages);
        case ChatFormat::mistral_inst: return render_mistral_inst(tokens, messages);
        case ChatFormat::deepseek_v3: return render_deepseek_v3(tokens, messages, options);
        case ChatFormat::gpt_oss_harmony: return render_gpt_oss_harmony(messages, options);
        case ChatFormat::none: fail("chat: the tokenizer has no chat template");
        case ChatFormat::unknown:
            fail("chat: the tokenizer's chat template is not one of the supported families (Qwen3 ChatML, Llama 3, "
                 "Mistral [INST], DeepSeek-V3, GPT-OSS harmony); refusing to guess its prompt format");
    }
    fail("chat: invalid chat format ", static_cast<int>(format));
}

std::string render_chat(const Tokenizer& tokenizer, std::span<const ChatMessage> messages, const ChatOptions& options) {
    const TokenizerData& d = tokenizer.data();
    ChatSpecialTokens tokens;
    if (d.bos_id) tokens.bos = tokenizer.added_token_text(*d.bos_id);
    if (d.eos_id) tokens.eos = tokenizer.added_token_text(*d.eos_id);
    return render_chat(d.chat_format, tokens, messages, options);
}

}  // namespace moepack::engine
