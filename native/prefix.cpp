#include "prefix.h"

namespace mmlm {

Resume matchPrefix(const std::vector<KvEntry>& kv, const Prompt& prompt) {
    Resume r;
    const size_t n = prompt.chunks.size();
    for (size_t i = 0; i < n; ++i) {
        const PromptChunk& chunk = prompt.chunks[i];
        r.chunk = i;
        r.offset = 0;
        if (!chunk.media) {
            for (; r.offset < chunk.tokens.size(); ++r.offset) {
                if (r.entries >= kv.size() || kv[r.entries].media || kv[r.entries].token != chunk.tokens[r.offset]) {
                    r.common = r.positions;
                    return r;
                }
                ++r.entries;
                ++r.positions;
                ++r.tokens;
            }
        } else {
            if (chunk.key.empty() || r.entries >= kv.size() || !kv[r.entries].media || kv[r.entries].key != chunk.key) {
                r.common = r.positions;
                return r;
            }
            r.positions += kv[r.entries].positions;
            r.tokens += kv[r.entries].tokens;
            r.commonMedia = true;
            ++r.entries;
        }
    }
    if (n == 0 || r.entries == 0) return Resume{};
    r.common = r.positions;
    // The whole prompt is cached: evaluate its last token (or media chunk) again.
    const KvEntry& last = kv[--r.entries];
    r.chunk = n - 1;
    r.offset = last.media ? 0 : r.offset - 1;
    r.positions -= last.positions;
    r.tokens -= last.tokens;
    return r;
}

}  // namespace mmlm
