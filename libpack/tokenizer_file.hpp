// Serialises TokenizerData to tokenizer.bin and DecodeTable to vocab.bin, and parses both
// back from untrusted bytes: header (magic, version, size, XXH64) and every field checked;
// a problem is a moepack::Error naming the file and the item (formats/tokenizer.md, vocab.md).
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "tokenizer_format.hpp"

namespace moepack {

std::vector<std::byte> serialize_tokenizer_file(const TokenizerData& data);
TokenizerData parse_tokenizer_file(std::span<const std::byte> bytes, const std::string& file);
// The payload alone, without the header (what the fuzz target exercises past the checksum).
TokenizerData parse_tokenizer_payload(std::span<const std::byte> payload, const std::string& file);

std::vector<std::byte> serialize_vocab_file(const DecodeTable& table);
DecodeTable parse_vocab_file(std::span<const std::byte> bytes, const std::string& file);

// Reads and parses a tokenizer.bin from disk.
TokenizerData read_tokenizer_file(const std::string& path);

}  // namespace moepack
