// Recognises the chat-template families whose rendering the engine reproduces exactly, from
// the Jinja text of a checkpoint's chat template. A template of another family, or a variant
// with behaviour the engine does not reproduce, is ChatFormat::unknown.
#pragma once

#include <string_view>

#include "tokenizer_format.hpp"

namespace moepack {

ChatFormat detect_chat_format(std::string_view chat_template);

// Lower-case name used in messages and `moepack inspect`-style output, e.g. "chatml_qwen3".
const char* to_string(ChatFormat format);

}  // namespace moepack
