#include "chat-layer.h"

#include <cstdio>
#include <stdexcept>

#ifdef _WIN32
#include <io.h>
#define MMLM_DUP _dup
#define MMLM_DUP2 _dup2
#define MMLM_CLOSE _close
#define MMLM_FILENO _fileno
#else
#include <unistd.h>
#define MMLM_DUP dup
#define MMLM_DUP2 dup2
#define MMLM_CLOSE close
#define MMLM_FILENO fileno
#endif

#include "chat.h"  // common/chat.h
#include "common.h"
#include "engine.h"
#include "json-schema-to-grammar.h"
#include "llama.h"
#include "log-routing.h"
#include "peg-parser.h"

namespace mmlm {

namespace {

// The error lines llama.cpp logs on this thread while `fn` runs, kept apart from the model's
// logger (these calls run on the JS thread and their errors become the thrown message).
template <typename Fn>
auto capturingErrors(std::string& errors, Fn fn) -> decltype(fn()) {
    LogSink local(0, nullptr);
    struct Collect {
        LogSink& sink;
        std::string& out;
        ~Collect() { out = sink.takeErrors(); }
    } collect{local, errors};
    ScopedLogSink scope(&local);
    return fn();
}

// llama.cpp's grammar parser prints why a grammar does not parse to stderr, not to the log: for
// the length of one parse, stderr goes to a temporary file, and the reason is read back. (Another
// thread's stderr output in that window lands there too; the engine's logs go to the log sink.)
class StderrCapture {
 public:
    StderrCapture() : file_(std::tmpfile()) {
        if (file_ == nullptr) return;
        std::fflush(stderr);
        saved_ = MMLM_DUP(MMLM_FILENO(stderr));
        if (saved_ < 0 || MMLM_DUP2(MMLM_FILENO(file_), MMLM_FILENO(stderr)) < 0) restore();
    }
    ~StderrCapture() {
        restore();
        if (file_ != nullptr) std::fclose(file_);
    }
    // What was written, once stderr is back.
    std::string take() {
        restore();
        std::string out;
        if (file_ == nullptr) return out;
        std::rewind(file_);
        char buffer[4096];
        size_t n = 0;
        while ((n = std::fread(buffer, 1, sizeof buffer, file_)) > 0 && out.size() < (1u << 20)) out.append(buffer, n);
        return out;
    }

 private:
    void restore() {
        if (saved_ < 0) return;
        std::fflush(stderr);
        MMLM_DUP2(saved_, MMLM_FILENO(stderr));
        MMLM_CLOSE(saved_);
        saved_ = -1;
    }
    FILE* file_;
    int saved_ = -1;
};

// "error parsing grammar: <reason>" out of what the grammar parser printed.
std::string grammarParseReason(const std::string& printed) {
    const std::string tag = "error parsing grammar: ";
    const size_t at = printed.find(tag);
    if (at == std::string::npos) return "";
    const size_t from = at + tag.size();
    return printed.substr(from, printed.find('\n', from) - from);
}

common_chat_tool_choice toolChoiceOf(const std::string& value) {
    if (value == "none") return COMMON_CHAT_TOOL_CHOICE_NONE;
    if (value == "required") return COMMON_CHAT_TOOL_CHOICE_REQUIRED;
    return COMMON_CHAT_TOOL_CHOICE_AUTO;
}

ChatParams toParams(common_chat_params&& c) {
    ChatParams out;
    out.prompt = std::move(c.prompt);
    out.grammar = std::move(c.grammar);
    out.grammarLazy = c.grammar_lazy;
    for (const common_grammar_trigger& t : c.grammar_triggers) {
        out.triggers.push_back({static_cast<int32_t>(t.type), t.value});
    }
    out.preservedTokens = std::move(c.preserved_tokens);
    out.additionalStops = std::move(c.additional_stops);
    out.generationPrompt = std::move(c.generation_prompt);
    out.format = static_cast<int32_t>(c.format);
    out.parser = std::move(c.parser);
    return out;
}

}  // namespace

ChatLayer::ChatLayer(const common_chat_templates* templates, const llama_vocab* vocab)
    : templates_(templates), vocab_(vocab) {}

ChatLayer::~ChatLayer() = default;

bool ChatLayer::supportsTools() const {
    auto caps = common_chat_templates_get_caps(templates_);
    auto it = caps.find("supports_tool_calls");
    return it != caps.end() && it->second;
}

ChatParams ChatLayer::apply(const std::string& requestJson) const {
    common_chat_templates_inputs inputs;
    bool prefillToolCall = false;
    try {
        const common_json req = common_json::parse(requestJson);
        inputs.use_jinja = true;
        inputs.add_bos = llama_vocab_get_add_bos(vocab_);
        inputs.add_eos = llama_vocab_get_add_eos(vocab_);
        inputs.messages = common_chat_msgs_parse_oaicompat(req.at("messages"));
        if (req.contains("tools")) inputs.tools = common_chat_tools_parse_oaicompat(req.at("tools"));
        if (req.contains("tool_choice")) inputs.tool_choice = toolChoiceOf(req.at("tool_choice").get<std::string>());
        if (req.contains("parallel_tool_calls")) {
            inputs.parallel_tool_calls = req.at("parallel_tool_calls").get<bool>();
        } else {
            // As llama-server: what the template supports.
            auto caps = common_chat_templates_get_caps(templates_);
            inputs.parallel_tool_calls = caps["supports_parallel_tool_calls"];
        }
        if (req.contains("json_schema")) inputs.json_schema = req.at("json_schema").dump();
        if (req.contains("add_generation_prompt")) {
            inputs.add_generation_prompt = req.at("add_generation_prompt").get<bool>();
        }
        prefillToolCall = req.contains("prefill_tool_call") && req.at("prefill_tool_call").get<bool>();
    } catch (const std::exception& e) {
        throw CodedError("E_INVALID_ARGUMENT", std::string("could not read the chat request: ") + e.what());
    }
    std::string errors;
    try {
        return capturingErrors(errors, [&]() {
            // A required tool call starts with the template's tool-call marker: found as the lazy
            // grammar's trigger word, and put at the start of the reply (as an assistant prefill
            // that llama.cpp continues), so that the grammar leaves no room for text before it.
            if (prefillToolCall && inputs.tool_choice == COMMON_CHAT_TOOL_CHOICE_REQUIRED && !inputs.tools.empty()) {
                common_chat_templates_inputs probe = inputs;
                probe.tool_choice = COMMON_CHAT_TOOL_CHOICE_AUTO;
                const common_chat_params lazy = common_chat_templates_apply(templates_, probe);
                std::string marker;
                for (const common_grammar_trigger& t : lazy.grammar_triggers) {
                    if (t.type == COMMON_GRAMMAR_TRIGGER_TYPE_WORD) {
                        marker = t.value;
                        break;
                    }
                }
                if (!marker.empty()) {
                    common_chat_msg prefill;
                    prefill.role = "assistant";
                    prefill.content = marker;
                    inputs.messages.push_back(std::move(prefill));
                    inputs.continue_final_message = COMMON_CHAT_CONTINUATION_AUTO;
                    inputs.add_generation_prompt = false;
                    ChatParams out = toParams(common_chat_templates_apply(templates_, inputs));
                    out.continuation = true;
                    out.toolsPrefilled = true;
                    out.toolCallMarker = marker;
                    out.parallelToolCalls = inputs.parallel_tool_calls;
                    return out;
                }
            }
            ChatParams out = toParams(common_chat_templates_apply(templates_, inputs));
            out.parallelToolCalls = inputs.parallel_tool_calls;
            return out;
        });
    } catch (const CodedError&) {
        throw;
    } catch (const std::exception& e) {
        throw CodedError("E_INVALID_ARGUMENT",
                         withDetail(std::string("the chat template failed on these messages: ") + e.what(), errors));
    }
}

ParsedChat ChatLayer::parse(const std::string& text, bool partial, int32_t format, const std::string& parser,
                            const std::string& generationPrompt, bool continuation) {
    common_chat_parser_params params;
    params.format = static_cast<common_chat_format>(format);
    params.generation_prompt = generationPrompt;
    params.is_continuation = continuation;
    params.parse_tool_calls = true;
    if (!parser.empty()) {
        std::shared_ptr<common_peg_arena> arena;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            auto it = parsers_.find(parser);
            if (it != parsers_.end()) {
                arena = it->second;
            } else {
                arena = std::make_shared<common_peg_arena>();
                arena->load(parser);
                if (parsers_.size() >= 32) parsers_.clear();
                parsers_.emplace(parser, arena);
            }
        }
        params.parser = *arena;
    }
    ParsedChat out;
    std::string errors;
    try {
        common_chat_msg msg = capturingErrors(errors, [&]() { return common_chat_parse(text, partial, params); });
        out.content = std::move(msg.content);
        out.reasoning = std::move(msg.reasoning_content);
        for (common_chat_tool_call& call : msg.tool_calls) {
            out.toolCalls.push_back({std::move(call.id), std::move(call.name), std::move(call.arguments)});
        }
    } catch (const std::exception& e) {
        out.content = text;
        out.error = e.what();
    }
    return out;
}

std::string ChatLayer::schemaToGrammar(const std::string& schemaJson) {
    std::string errors;
    std::string grammar;
    std::string printed;
    try {
        StderrCapture capture;
        grammar = capturingErrors(errors, [&]() { return json_schema_to_grammar(common_json::parse(schemaJson)); });
        printed = capture.take();
    } catch (const std::exception& e) {
        throw CodedError("E_INVALID_SCHEMA", withDetail(e.what(), errors));
    }
    // A part the converter cannot enforce (an unsupported pattern) would be accepted as anything:
    // refused, so that an output never breaks the schema it was asked for.
    const std::string tag = "WARNING: JSON schema conversion was incomplete: ";
    const size_t at = printed.find(tag);
    if (at != std::string::npos) {
        const size_t from = at + tag.size();
        throw CodedError("E_INVALID_SCHEMA", "llama.cpp cannot enforce part of this schema: " +
                                                 printed.substr(from, printed.find('\n', from) - from) +
                                                 " (write \\d as [0-9], and avoid named groups and lookarounds)");
    }
    return grammar;
}

void ChatLayer::checkGrammar(const std::string& grammar) const {
    std::string errors;
    std::string printed;
    llama_sampler* sampler = nullptr;
    {
        StderrCapture capture;
        sampler =
            capturingErrors(errors, [&]() { return llama_sampler_init_grammar(vocab_, grammar.c_str(), "root"); });
        printed = capture.take();
    }
    if (sampler == nullptr) {
        std::string reason = grammarParseReason(printed);
        if (reason.empty()) reason = errors;
        throw CodedError("E_INVALID_GRAMMAR",
                         "the grammar does not parse" + (reason.empty() ? std::string() : ": " + reason));
    }
    llama_sampler_free(sampler);
}

}  // namespace mmlm
