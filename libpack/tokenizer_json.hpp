// Reads a Hugging Face tokenizer (tokenizer.json, tokenizer_config.json and, when present,
// chat_template.jinja of a checkpoint directory) into TokenizerData. Supports BPE models
// with byte-level or SentencePiece-style (byte fallback) symbols; anything else is refused
// with a moepack::Error naming the file and the unsupported component.
#pragma once

#include <string>

#include "tokenizer_format.hpp"

namespace moepack {

TokenizerData read_hf_tokenizer(const std::string& checkpoint_dir);

}  // namespace moepack
