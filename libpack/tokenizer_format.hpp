// The in-memory form of tokenizer.bin and vocab.bin (formats/tokenizer.md, formats/vocab.md)
// and their format constants: one definition shared by the exporter and the engine's reader.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moepack {

inline constexpr char kTokenizerMagic[8] = {'M', 'O', 'E', 'P', 'K', 'T', 'O', 'K'};
inline constexpr char kVocabMagic[8] = {'M', 'O', 'E', 'P', 'K', 'V', 'O', 'C'};
inline constexpr uint32_t kTokenizerFormatVersion = 1;
inline constexpr uint32_t kVocabFormatVersion = 1;
inline constexpr size_t kTokenFileHeaderBytes = 32;  // magic, version, reserved, payload size, XXH64

// Model flags (bits of one byte).
inline constexpr uint8_t kModelByteLevel = 1;     // BPE runs on raw bytes (ByteLevel pre-tokenizer)
inline constexpr uint8_t kModelByteFallback = 2;  // unknown characters become <0xNN> tokens
inline constexpr uint8_t kModelFuseUnk = 4;       // consecutive unknown characters make one unk
inline constexpr uint8_t kModelIgnoreMerges = 8;  // a word found whole in the vocab skips merging
inline constexpr uint8_t kModelFlagsKnown = 15;

// Added-token flags.
inline constexpr uint8_t kAddedSpecial = 1;
inline constexpr uint8_t kAddedNormalized = 2;  // matched in normalised text, not in the input
inline constexpr uint8_t kAddedLstrip = 4;      // swallows whitespace on its left
inline constexpr uint8_t kAddedRstrip = 8;      // swallows whitespace on its right
inline constexpr uint8_t kAddedFlagsKnown = 15;

// Vocabulary entry flag: a byte-level vocabulary entry that is not made of byte-level
// symbols; its bytes are its literal UTF-8 and BPE can never produce it.
inline constexpr uint8_t kVocabLiteral = 1;

enum class NormalizerKind : uint8_t { nfc = 1, nfkc = 2, nfd = 3, nfkd = 4, prepend = 5, replace = 6 };
enum class PreTokenizerKind : uint8_t { split_isolated = 1, byte_level = 2 };
enum class DecoderKind : uint8_t {
    byte_level = 1,     // concatenate token bytes, then UTF-8 with U+FFFD for invalid sequences
    byte_fallback = 2,  // a run of <0xNN> tokens that is not valid UTF-8 becomes one U+FFFD per byte
};
// How a token id decodes.
enum class TokenKind : uint8_t { unused = 0, normal = 1, byte = 2, special = 3, added = 4 };
enum class ChatFormat : uint8_t {
    none = 0,         // the checkpoint has no chat template
    unknown = 1,      // it has one, but not of a supported family
    chatml_qwen3 = 2,
    llama3 = 3,
    mistral_inst = 4,
    deepseek_v3 = 5,
    gpt_oss_harmony = 6,
};
inline constexpr uint8_t kChatFormatLast = 6;

struct VocabEntry {
    uint32_t id = 0;
    uint8_t flags = 0;
    std::string bytes;  // in the model's symbol space: raw bytes when byte-level, else UTF-8
};

struct Merge {
    uint32_t left = 0, right = 0, result = 0;  // the rank is the position in the list
};

struct AddedToken {
    uint32_t id = 0;
    uint8_t flags = 0;
    std::string content;
};

struct NormalizerStep {
    NormalizerKind kind = NormalizerKind::nfc;
    std::string pattern;  // replace: the literal to find; prepend: the prefix
    std::string content;  // replace: what it becomes
};

struct PreTokenizerStep {
    PreTokenizerKind kind = PreTokenizerKind::split_isolated;
    // The regular expression (PCRE2 syntax) the text is split with, matches isolated;
    // byte_level: empty when it does not split (then it only maps the text to bytes).
    std::string pattern;
    bool add_prefix_space = false;  // byte_level: a space is put before text not starting with one
};

struct DecodeEntry {
    TokenKind kind = TokenKind::unused;
    std::string bytes;  // what the token prints (byte: exactly one byte)
};

// Everything decoding needs: the body of vocab.bin and a section of tokenizer.bin.
struct DecodeTable {
    DecoderKind decoder = DecoderKind::byte_level;
    uint32_t strip_leading_spaces = 0;  // spaces removed from the start of a decoded text
    std::vector<DecodeEntry> tokens;    // indexed by id
};

struct TokenizerData {
    uint8_t model_flags = 0;
    std::optional<uint32_t> unk_id;
    std::vector<VocabEntry> vocab;
    std::vector<Merge> merges;
    std::vector<AddedToken> added;
    std::vector<NormalizerStep> normalizer;
    std::vector<PreTokenizerStep> pre_tokenizer;
    std::vector<uint32_t> prefix_ids;  // added around a single text when special tokens are on
    std::vector<uint32_t> suffix_ids;
    std::optional<uint32_t> bos_id, eos_id, pad_id;
    DecodeTable decode;
    ChatFormat chat_format = ChatFormat::none;
    std::string chat_template;
};

}  // namespace moepack
