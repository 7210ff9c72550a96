#pragma once
// Prefix reuse: what one sequence of the KV cache holds, and how much of a new prompt it
// already holds.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "media.h"

namespace mmlm {

// One cell range of a sequence as the engine wrote it: a text token, or a whole media chunk
// (known by its key). A slot's record lists them in position order; an entry is appended only
// after its decode has succeeded.
struct KvEntry {
    bool media = false;
    int32_t token = -1;
    std::string key;
    int32_t tokens = 1;
    int32_t positions = 1;
};

// Where evaluation of a prompt starts: chunk `chunk`, token `offset` inside it (text chunks
// only), after `entries` record entries covering `positions` positions and `tokens` tokens.
struct Resume {
    size_t chunk = 0;
    size_t offset = 0;
    size_t entries = 0;
    int32_t positions = 0;
    int32_t tokens = 0;
    // Positions the record and the prompt have in common (before stepping back one token so
    // that sampling has logits).
    int32_t common = 0;
    bool commonMedia = false;  // the common prefix holds a media chunk
};

// The longest prefix of the prompt already in `kv`: text compared token by token, media chunk
// by chunk by key. At least one token is left to evaluate, since sampling needs the logits of
// the prompt's last position.
Resume matchPrefix(const std::vector<KvEntry>& kv, const Prompt& prompt);

}  // namespace mmlm
