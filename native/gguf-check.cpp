// Consistency rules for a text model, its projector and its chat template, each one a way in which
// a structurally valid file makes the pinned llama.cpp abort or crash the process (see
// test/model-precheck.test.ts, which builds one broken file per rule). They only refuse what
// llama.cpp cannot run: every real converter output passes them.
#include "gguf-check.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "engine.h"
#include "gguf.h"

namespace mmlm {

namespace {

// Metadata and tensor shapes of one GGUF file (no tensor data is read).
class GgufFile {
 public:
    explicit GgufFile(const std::string& path)
        : g_(gguf_init_from_file(path.c_str(), gguf_init_params{/*no_alloc*/ true, /*ctx*/ nullptr})) {}

    bool ok() const { return g_ != nullptr; }

    // Any integer type: the checks compare values, whatever type the converter wrote.
    std::optional<int64_t> integer(const std::string& key) const {
        const int64_t id = gguf_find_key(g_.get(), key.c_str());
        if (id < 0) return std::nullopt;
        switch (gguf_get_kv_type(g_.get(), id)) {
            case GGUF_TYPE_UINT8:
                return gguf_get_val_u8(g_.get(), id);
            case GGUF_TYPE_INT8:
                return gguf_get_val_i8(g_.get(), id);
            case GGUF_TYPE_UINT16:
                return gguf_get_val_u16(g_.get(), id);
            case GGUF_TYPE_INT16:
                return gguf_get_val_i16(g_.get(), id);
            case GGUF_TYPE_UINT32:
                return gguf_get_val_u32(g_.get(), id);
            case GGUF_TYPE_INT32:
                return gguf_get_val_i32(g_.get(), id);
            case GGUF_TYPE_UINT64:
                return static_cast<int64_t>(std::min<uint64_t>(gguf_get_val_u64(g_.get(), id), INT64_MAX));
            case GGUF_TYPE_INT64:
                return gguf_get_val_i64(g_.get(), id);
            default:
                return std::nullopt;
        }
    }

    // An array of 32-bit integers, or one integer (llama.cpp's get_key_or_arr repeats it).
    std::optional<std::vector<int64_t>> integers(const std::string& key, size_t repeat) const {
        const int64_t id = gguf_find_key(g_.get(), key.c_str());
        if (id < 0) return std::nullopt;
        if (gguf_get_kv_type(g_.get(), id) != GGUF_TYPE_ARRAY) {
            const auto value = integer(key);
            if (!value) return std::nullopt;
            return std::vector<int64_t>(repeat, *value);
        }
        const auto type = gguf_get_arr_type(g_.get(), id);
        if (type != GGUF_TYPE_INT32 && type != GGUF_TYPE_UINT32) return std::nullopt;
        const size_t n = gguf_get_arr_n(g_.get(), id);
        const void* data = gguf_get_arr_data(g_.get(), id);
        std::vector<int64_t> out(n);
        for (size_t i = 0; i < n; ++i) {
            out[i] = type == GGUF_TYPE_INT32 ? static_cast<const int32_t*>(data)[i]
                                             : static_cast<int64_t>(static_cast<const uint32_t*>(data)[i]);
        }
        return out;
    }

    std::string string(const std::string& key) const {
        const int64_t id = gguf_find_key(g_.get(), key.c_str());
        if (id < 0 || gguf_get_kv_type(g_.get(), id) != GGUF_TYPE_STRING) return "";
        return gguf_get_val_str(g_.get(), id);
    }

    bool flag(const std::string& key) const {
        const int64_t id = gguf_find_key(g_.get(), key.c_str());
        return id >= 0 && gguf_get_kv_type(g_.get(), id) == GGUF_TYPE_BOOL && gguf_get_val_bool(g_.get(), id);
    }

    // The tensor's ne[], or nothing when the file has no tensor of that name.
    std::optional<std::vector<int64_t>> shape(const std::string& name) const {
        const int64_t id = gguf_find_tensor(g_.get(), name.c_str());
        if (id < 0) return std::nullopt;
        const int64_t* ne = gguf_get_tensor_ne(g_.get(), id);
        return std::vector<int64_t>(ne, ne + GGML_MAX_DIMS);
    }

    bool has(const std::string& name) const { return gguf_find_tensor(g_.get(), name.c_str()) >= 0; }

 private:
    struct Deleter {
        void operator()(gguf_context* g) const { gguf_free(g); }
    };
    std::unique_ptr<gguf_context, Deleter> g_;
};

std::string str(int64_t v) { return std::to_string(v); }

// "100 x 128": ne[] in ggml order, trailing 1s left out.
std::string dims(const std::vector<int64_t>& ne) {
    size_t n = ne.size();
    while (n > 1 && ne[n - 1] == 1) --n;
    std::string out;
    for (size_t i = 0; i < n; ++i) out += (i ? " x " : "") + str(ne[i]);
    return out;
}

[[noreturn]] void refuse(const std::string& what, const std::string& path, const std::string& detail) {
    throw CodedError("E_MODEL_LOAD", what + " " + path + ": " + detail +
                                         ". The file is inconsistent and this model would crash llama.cpp; "
                                         "re-convert it");
}

// ---- the projector ------------------------------------------------------------------------------

bool isQwenMerger(const std::string& type) {
    return type == "qwen2vl_merger" || type == "qwen2.5vl_merger" || type == "qwen2.5o" || type == "qwen3vl_merger";
}

// Types whose graph convolves the image with v.patch_embd.weight at a stride of
// clip.vision.patch_size, as read from the file (a few others change the stride or use a linear
// patch embedding, so they are left out).
bool convolvesAtPatchSize(const std::string& type) {
    return isQwenMerger(type) || type == "gemma3" || type == "idefics3" || type == "mlp" || type == "mlp_norm";
}

// clip.cpp swaps ffn_up and ffn_down of these types when ffn_down's ne[0] is the embedding width
// (older converters wrote them the other way round): see is_ffn_swapped in tools/mtmd/clip.cpp.
bool mayHaveSwappedFfn(const std::string& type) {
    static const std::set<std::string> types = {
        "mlp",       "mlp_norm", "ldp",    "ldpv2",    "qwen2vl_merger", "qwen2.5vl_merger", "qwen2.5o",
        "exaone4_5", "glm_edge", "gemma3", "idefics3", "minicpmv",       "minicpmv4_6"};
    return types.count(type) > 0;
}

// One encoder (vision or audio) of an mmproj: its keys are clip.<key>.*, its tensors <tensor>.*.
struct Encoder {
    const char* key;
    const char* tensor;
    std::string projector;
};

// The per-block tensors that clip.cpp reads for every layer, most of them optional there: a block
// that lacks one that block 0 has leaves a null tensor for the graph to dereference.
const char* const kBlockTensors[] = {"attn_q", "attn_k", "attn_v", "attn_out", "attn_qkv",
                                     "ln1",    "ln2",    "ffn_up", "ffn_down"};

class ProjectorCheck {
 public:
    ProjectorCheck(const GgufFile& f, const std::string& path) : f_(f), path_(path) {}

    void run() {
        const std::string common = f_.string("clip.projector_type");
        if (f_.flag("clip.has_vision_encoder")) {
            const Encoder vision{"vision", "v", common.empty() ? f_.string("clip.vision.projector_type") : common};
            if (blocks(vision)) visionShapes(vision);
        }
        if (f_.flag("clip.has_audio_encoder")) {
            // Only the block structure: the audio graphs differ too much for shape rules.
            blocks(Encoder{"audio", "a", common.empty() ? f_.string("clip.audio.projector_type") : common});
        }
    }

 private:
    std::string key(const Encoder& e, const std::string& name) const {
        return "clip." + std::string(e.key) + "." + name;
    }
    std::string blockTensor(const Encoder& e, int64_t il, const std::string& name) const {
        return std::string(e.tensor) + ".blk." + str(il) + "." + name + ".weight";
    }
    [[noreturn]] void fail(const std::string& detail) const { refuse("mmproj", path_, detail); }

    // Block count, head count and the tensors of every block, for encoders with standard blocks
    // (block 0 has them; transformer-less towers write 0 for both counts). Returns whether it has
    // them, and then every block up to the block count is there.
    bool blocks(const Encoder& e) {
        std::vector<std::string> core;
        for (const char* name : kBlockTensors) {
            if (f_.has(blockTensor(e, 0, name))) core.push_back(name);
        }
        if (core.empty()) return false;
        const auto blockCount = f_.integer(key(e, "block_count"));
        if (blockCount && *blockCount <= 0) {
            fail(key(e, "block_count") + " is " + str(*blockCount) + ", but the file has " + e.key + " blocks (" +
                 blockTensor(e, 0, core.front()) + ")");
        }
        if (blockCount) {
            for (int64_t il = 1; il < *blockCount; ++il) {
                // A mixture-of-experts block (dots.ocr 3 pyramid) has ffn_*_exps instead of ffn_up/down.
                const bool moe = f_.has(std::string(e.tensor) + ".blk." + str(il) + ".ffn_gate_exps.weight");
                for (const auto& name : core) {
                    if (moe && (name == "ffn_up" || name == "ffn_down")) continue;
                    if (!f_.has(blockTensor(e, il, name))) {
                        fail(blockTensor(e, il, name) + " is missing (block 0 has it; " + key(e, "block_count") +
                             " is " + str(*blockCount) + ")");
                    }
                }
            }
        }
        const bool attention = std::any_of(
            core.begin(), core.end(), [](const std::string& n) { return n.rfind("attn_", 0) == 0 && n != "attn_out"; });
        const auto heads = f_.integer(key(e, "attention.head_count"));
        const auto width = f_.integer(key(e, "embedding_length"));
        if (!attention || !heads) return true;
        if (*heads <= 0) fail(key(e, "attention.head_count") + " is " + str(*heads) + " (expected at least 1)");
        const auto headDim = f_.integer(key(e, "attention.head_dim"));
        if ((!headDim || *headDim <= 0) && width && *width % *heads != 0) {
            fail(key(e, "attention.head_count") + " is " + str(*heads) + ", which does not divide " +
                 key(e, "embedding_length") + " " + str(*width) + " (and " + key(e, "attention.head_dim") +
                 " is not set)");
        }
        return true;
    }

    void visionShapes(const Encoder& e) {
        const std::string& type = e.projector;
        const auto width = f_.integer(key(e, "embedding_length"));
        const auto blockCount = f_.integer(key(e, "block_count"));
        if (width && *width > 0 && blockCount) {
            for (int64_t il = 0; il < *blockCount; ++il) {
                const std::string qName = blockTensor(e, il, "attn_q");
                const auto q = f_.shape(qName);
                if (q && (*q)[0] != *width) {
                    fail(qName + " is " + dims(*q) + ", but " + key(e, "embedding_length") + " is " + str(*width) +
                         " (expected " + str(*width) + " x ...)");
                }
                ffn(e, il, *width);
            }
        }

        const auto patch = f_.shape("v.patch_embd.weight");
        const auto patchSize = f_.integer(key(e, "patch_size"));
        if (convolvesAtPatchSize(type) && patch && patchSize &&
            ((*patch)[0] != *patchSize || (*patch)[1] != *patchSize)) {
            fail(key(e, "patch_size") + " is " + str(*patchSize) + ", but v.patch_embd.weight is a " +
                 str((*patch)[0]) + " x " + str((*patch)[1]) + " kernel (expected patch_size " + str((*patch)[0]) +
                 ")");
        }

        if (isQwenMerger(type)) {
            // qwen2vl.cpp / qwen3vl.cpp add both temporal slices of the Conv3D patch embedding, always.
            for (const char* name : {"v.patch_embd.weight", "v.patch_embd.weight.1"}) {
                if (!f_.has(name)) {
                    fail(std::string(name) + " is missing (the " + type +
                         " projector always uses both temporal slices of the patch embedding)");
                }
            }
            // The merger MLP: 2x2 merged patches (a multiple of the width) -> mm.0 -> GELU -> mm.2.
            const auto mm0 = f_.shape("mm.0.weight");
            const auto mm2 = f_.shape("mm.2.weight");
            if (mm0 && width && *width > 0 && (*mm0)[0] % *width != 0) {
                fail("mm.0.weight is " + dims(*mm0) + ", but its input width " + str((*mm0)[0]) +
                     " is not a multiple of " + key(e, "embedding_length") + " " + str(*width) + " (expected " +
                     str(4 * *width) + " x ..., the 2x2 merged patches)");
            }
            if (mm0 && mm2 && (*mm2)[0] != (*mm0)[1]) {
                fail("mm.2.weight is " + dims(*mm2) + ", but mm.0.weight is " + dims(*mm0) + " (expected " +
                     str((*mm0)[1]) + " x ..., mm.0's output width)");
            }
        }

        if (type == "gemma3") {
            // The encoder's patch grid is average-pooled in scale_factor x scale_factor cells.
            const auto imageSize = f_.integer(key(e, "image_size"));
            const int64_t merge = f_.integer("clip.vision.projector.scale_factor").value_or(4);
            if (imageSize && patchSize && *patchSize > 0) {
                const int64_t side = *imageSize / *patchSize;
                if (merge <= 0 || side % merge != 0) {
                    fail("clip.vision.projector.scale_factor is " + str(merge) + ", which does not divide the " +
                         str(side) + " patches per side (" + key(e, "image_size") + " " + str(*imageSize) + " / " +
                         key(e, "patch_size") + " " + str(*patchSize) + ")");
                }
            }
        }
    }

    // ffn_up then ffn_down: {width, n} then {n, ...}, once clip.cpp has undone an old swap.
    void ffn(const Encoder& e, int64_t il, int64_t width) const {
        const std::string upName = blockTensor(e, il, "ffn_up");
        const std::string downName = blockTensor(e, il, "ffn_down");
        const auto up = f_.shape(upName);
        const auto down = f_.shape(downName);
        if (!up || !down) return;
        const bool swapped = mayHaveSwappedFfn(e.projector) && (*down)[0] == width;
        const auto& in = swapped ? *down : *up;
        const auto& out = swapped ? *up : *down;
        if (in[0] != width) {
            fail(upName + " is " + dims(*up) + ", but " + key(e, "embedding_length") + " is " + str(width) +
                 " (expected " + str(width) + " x n" +
                 (mayHaveSwappedFfn(e.projector) ? ", or n x " + str(width) : "") + ", with " + downName + " " +
                 dims(*down) + ")");
        }
        if (out[0] != in[1]) {
            fail(upName + " is " + dims(*up) + ", but " + downName + " is " + dims(*down) +
                 " (expected the inner width of the two to match)");
        }
    }

    const GgufFile& f_;
    const std::string& path_;
};

// ---- the text model -----------------------------------------------------------------------------

// M-RoPE: ggml's rope kernel asserts that the sections fit in the head (sum <= head_dim, the ne[0]
// of the rotated tensor: ggml_mrope_cache_init). Real models use head_dim / 2.
void checkRopeSections(const GgufFile& f, const std::string& path) {
    const std::string arch = f.string("general.architecture");
    const std::string sectionsKey = arch + ".rope.dimension_sections";
    const auto sections = f.integers(sectionsKey, 4);
    if (arch.empty() || !sections) return;
    int64_t sum = 0;
    for (int64_t s : *sections) sum += s;
    int64_t headDim = f.integer(arch + ".attention.key_length").value_or(0);
    if (headDim <= 0) {
        const auto width = f.integer(arch + ".embedding_length");
        const auto heads = f.integer(arch + ".attention.head_count");
        if (width && heads && *heads > 0) headDim = *width / *heads;
    }
    if (headDim > 0 && sum > headDim) {
        std::string list;
        for (int64_t s : *sections) list += (list.empty() ? "" : ", ") + str(s);
        refuse("model", path,
               sectionsKey + " is [" + list + "], which sums to " + str(sum) + ", more than the head dimension " +
                   str(headDim) + " (expected at most " + str(headDim) +
                   "; converters write head_dim / 2 = " + str(headDim / 2) + ")");
    }
}

// ---- the chat template --------------------------------------------------------------------------
//
// A heuristic for the obvious cases only: llama.cpp renders the template while it loads, and a
// macro that always calls itself overflows the stack (SIGSEGV) and a huge literal range() runs
// for minutes. Bounded recursion (a call under {% if %}, {% for %} or an inline if/and/or) and
// computed ranges are left alone.

struct JinjaToken {
    enum Kind { Name, Number, String, Punct } kind;
    std::string text;
};

std::vector<JinjaToken> lexTag(const std::string& body) {
    std::vector<JinjaToken> out;
    size_t i = 0;
    auto nameChar = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
    while (i < body.size()) {
        const char c = body[i];
        if (std::isspace(static_cast<unsigned char>(c))) {
            ++i;
        } else if (c == '"' || c == '\'') {
            size_t j = i + 1;
            while (j < body.size() && body[j] != c) j += body[j] == '\\' ? 2 : 1;
            out.push_back({JinjaToken::String, ""});
            i = j + 1;
        } else if (std::isdigit(static_cast<unsigned char>(c))) {
            size_t j = i;
            while (j < body.size() && (nameChar(body[j]) || body[j] == '.')) ++j;
            out.push_back({JinjaToken::Number, body.substr(i, j - i)});
            i = j;
        } else if (nameChar(c)) {
            size_t j = i;
            while (j < body.size() && nameChar(body[j])) ++j;
            out.push_back({JinjaToken::Name, body.substr(i, j - i)});
            i = j;
        } else {
            out.push_back({JinjaToken::Punct, std::string(1, c)});
            ++i;
        }
    }
    return out;
}

struct JinjaTag {
    bool statement;
    std::vector<JinjaToken> tokens;
};

// The {% %} and {{ }} tags of a template, comments and {% raw %} blocks left out.
std::vector<JinjaTag> jinjaTags(const std::string& src) {
    std::vector<JinjaTag> tags;
    size_t i = 0;
    while ((i = src.find('{', i)) != std::string::npos && i + 1 < src.size()) {
        const char kind = src[i + 1];
        if (kind == '#') {
            const size_t end = src.find("#}", i + 2);
            if (end == std::string::npos) break;
            i = end + 2;
            continue;
        }
        if (kind != '%' && kind != '{') {
            ++i;
            continue;
        }
        const char close = kind == '%' ? '%' : '}';
        size_t j = i + 2;
        int depth = 0;
        char quote = 0;
        for (; j + 1 < src.size(); ++j) {
            const char c = src[j];
            if (quote) {
                if (c == '\\')
                    ++j;
                else if (c == quote)
                    quote = 0;
            } else if (c == '"' || c == '\'') {
                quote = c;
            } else if (depth == 0 && c == close && src[j + 1] == '}') {
                break;
            } else if (c == '(' || c == '[' || c == '{') {
                ++depth;
            } else if ((c == ')' || c == ']' || c == '}') && depth > 0) {
                --depth;
            }
        }
        if (j + 1 >= src.size()) break;
        std::string body = src.substr(i + 2, j - i - 2);
        i = j + 2;
        if (!body.empty() && (body.front() == '-' || body.front() == '+')) body.erase(0, 1);
        if (!body.empty() && (body.back() == '-' || body.back() == '+')) body.pop_back();
        JinjaTag tag{kind == '%', lexTag(body)};
        if (tag.statement && !tag.tokens.empty() && tag.tokens[0].text == "raw") {
            const size_t end = src.find("endraw", i);
            if (end == std::string::npos) break;
            i = src.find("%}", end);
            if (i == std::string::npos) break;
            i += 2;
            continue;
        }
        tags.push_back(std::move(tag));
    }
    return tags;
}

// Integer literal value, or nothing for anything else (llama.cpp's Jinja does not read 1_000 as
// a number, so neither does this).
std::optional<double> intLiteral(const std::vector<JinjaToken>& arg) {
    size_t at = 0;
    bool negative = false;
    if (arg.size() == 2 && arg[0].kind == JinjaToken::Punct && (arg[0].text == "-" || arg[0].text == "+")) {
        negative = arg[0].text == "-";
        at = 1;
    }
    if (arg.size() != at + 1 || arg[at].kind != JinjaToken::Number) return std::nullopt;
    double value = 0;
    for (char c : arg[at].text) {
        if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
        value = value * 10 + (c - '0');
    }
    return negative ? -value : value;
}

constexpr double kMaxRange = 1e8;

class TemplateCheck {
 public:
    explicit TemplateCheck(std::string source) : source_(std::move(source)) {}

    void run(const std::string& src) {
        for (const auto& tag : jinjaTags(src)) visit(tag);
        for (size_t m = 0; m < macros_.size(); ++m) {
            if (!macros_[m].recurses) continue;
            for (const auto& call : calls_) {
                if (call.name == macros_[m].name && !call.inside.count(m)) {
                    fail("macro " + macros_[m].name +
                         " calls itself outside any {% if %} or {% for %}, so it recurses until the stack "
                         "overflows");
                }
            }
        }
    }

 private:
    enum class Frame { Macro, Conditional, Other };
    struct Open {
        Frame kind;
        size_t macro;
    };
    struct Macro {
        std::string name;
        bool recurses = false;
    };
    struct Call {
        std::string name;
        std::set<size_t> inside;  // the macros whose bodies hold the call
    };

    [[noreturn]] void fail(const std::string& detail) const {
        throw CodedError("E_MODEL_LOAD", "the chat template (" + source_ + ") would crash or hang llama.cpp: " +
                                             detail + ". Fix the template, or pass a working one as chatTemplate");
    }

    void pop(Frame kind) {
        for (size_t i = stack_.size(); i-- > 0;) {
            if (stack_[i].kind == kind) {
                stack_.resize(i);
                return;
            }
        }
    }

    void visit(const JinjaTag& tag) {
        const auto& t = tag.tokens;
        const std::string keyword = tag.statement && !t.empty() ? t[0].text : "";
        if (keyword == "macro") {
            if (t.size() > 1 && t[1].kind == JinjaToken::Name) {
                macros_.push_back({t[1].text});
                stack_.push_back({Frame::Macro, macros_.size() - 1});
            }
            return;
        }
        if (keyword == "endmacro") return pop(Frame::Macro);
        if (keyword == "endif" || keyword == "endfor" || keyword == "endcall") return pop(Frame::Conditional);
        if (keyword == "endset" || keyword == "endfilter" || keyword == "endblock" || keyword == "endwith" ||
            keyword == "endgeneration") {
            return pop(Frame::Other);
        }
        expression(t, tag.statement ? 1 : 0, keyword != "elif" && keyword != "else");
        // The bodies of if, for and call blocks may not run; the others always do.
        if (keyword == "if" || keyword == "for" || keyword == "call") stack_.push_back({Frame::Conditional, 0});
        const bool blockSet = keyword == "set" && std::none_of(t.begin(), t.end(), [](const JinjaToken& k) {
                                  return k.kind == JinjaToken::Punct && k.text == "=";
                              });
        if (blockSet || keyword == "filter" || keyword == "block" || keyword == "with" || keyword == "generation") {
            stack_.push_back({Frame::Other, 0});
        }
    }

    // The calls and range()s of one tag; `from` skips a statement's keyword.
    void expression(const std::vector<JinjaToken>& t, size_t from, bool unconditional) {
        std::set<size_t> inside;
        std::optional<size_t> innermost;
        bool guarded = false;
        for (const auto& open : stack_) {
            if (open.kind == Frame::Macro) {
                inside.insert(open.macro);
                innermost = open.macro;
                guarded = false;
            } else if (open.kind == Frame::Conditional) {
                guarded = true;
            }
        }
        for (size_t i = from; i < t.size(); ++i) {
            if (t[i].kind == JinjaToken::Name && (t[i].text == "if" || t[i].text == "and" || t[i].text == "or")) {
                guarded = true;
            }
        }
        for (size_t i = from; i + 1 < t.size(); ++i) {
            const bool call = t[i].kind == JinjaToken::Name && t[i + 1].text == "(" &&
                              !(i > 0 && t[i - 1].kind == JinjaToken::Punct && t[i - 1].text == ".");
            if (!call) continue;
            calls_.push_back({t[i].text, inside});
            if (innermost && unconditional && !guarded && macros_[*innermost].name == t[i].text) {
                macros_[*innermost].recurses = true;
            }
            if (t[i].text == "range") range(t, i + 2);
        }
    }

    // range(stop), range(start, stop) or range(start, stop, step) with literal arguments.
    void range(const std::vector<JinjaToken>& t, size_t at) {
        std::vector<std::vector<JinjaToken>> args(1);
        int depth = 0;
        for (; at < t.size(); ++at) {
            const std::string& s = t[at].kind == JinjaToken::Punct ? t[at].text : "";
            if (s == "(" || s == "[" || s == "{") ++depth;
            if (s == ")" || s == "]" || s == "}") {
                if (depth-- == 0) break;
            }
            if (depth == 0 && s == ",") {
                args.emplace_back();
            } else {
                args.back().push_back(t[at]);
            }
        }
        std::vector<double> v;
        for (const auto& arg : args) {
            const auto value = intLiteral(arg);
            if (!value) return;
            v.push_back(*value);
        }
        double count = 0;
        if (v.size() == 1) count = v[0];
        if (v.size() == 2) count = v[1] - v[0];
        if (v.size() == 3 && v[2] != 0) count = std::ceil((v[1] - v[0]) / v[2]);
        if (count >= kMaxRange) {
            std::string list;
            for (const auto& arg : args) {
                std::string text;
                for (const auto& k : arg) text += k.text;
                list += (list.empty() ? "" : ", ") + text;
            }
            fail("range(" + list + ") makes " + str(static_cast<int64_t>(count)) +
                 " items, and rendering it would run for minutes (at most " + str(static_cast<int64_t>(kMaxRange) - 1) +
                 " are allowed)");
        }
    }

    std::string source_;
    std::vector<Open> stack_;
    std::vector<Macro> macros_;
    std::vector<Call> calls_;
};

void checkTemplate(const std::string& src, const std::string& source) {
    if (!src.empty()) TemplateCheck(source).run(src);
}

}  // namespace

void checkModelFiles(const std::string& model, const std::string& mmproj, const std::string& chatTemplateOverride) {
    // Files that do not open are left to the loaders, which say why.
    const GgufFile text(model);
    if (text.ok()) checkRopeSections(text, model);
    const GgufFile proj(mmproj);
    if (proj.ok()) ProjectorCheck(proj, mmproj).run();
    if (!chatTemplateOverride.empty()) {
        checkTemplate(chatTemplateOverride, "the chatTemplate option");
    } else if (text.ok()) {
        // common_chat_templates_init reads both.
        checkTemplate(text.string("tokenizer.chat_template"), "tokenizer.chat_template of " + model);
        checkTemplate(text.string("tokenizer.chat_template.tool_use"), "tokenizer.chat_template.tool_use of " + model);
    }
}

}  // namespace mmlm
