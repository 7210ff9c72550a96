#pragma once
// The chat layer: llama.cpp's common chat templates (prompt, tool and schema grammars, lazy
// triggers) and its output parser (tool calls, content), plus JSON-schema and GBNF checks.
// Read-only on the loaded templates and vocab: safe on the JS thread while the engine decodes.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

struct common_chat_templates;
struct llama_vocab;
class common_peg_arena;

namespace mmlm {

struct GrammarTrigger {
    int32_t type = 0;  // common_grammar_trigger_type: 0 token, 1 word, 2 pattern, 3 full pattern
    std::string value;
};

// What common_chat_templates_apply gives for one request.
struct ChatParams {
    std::string prompt;
    std::string grammar;  // empty: none
    bool grammarLazy = false;
    std::vector<GrammarTrigger> triggers;
    std::vector<std::string> preservedTokens;
    std::vector<std::string> additionalStops;
    std::string generationPrompt;
    int32_t format = 0;  // common_chat_format
    std::string parser;  // the serialized PEG parser of the output
    bool continuation = false;
    bool toolsPrefilled = false;  // the tool-call marker was put in the prompt (required tool choice)
    std::string toolCallMarker;   // that marker
    bool parallelToolCalls = false;
};

struct ParsedToolCall {
    std::string id;
    std::string name;
    std::string arguments;
};

struct ParsedChat {
    std::string content;
    std::string reasoning;
    std::vector<ParsedToolCall> toolCalls;
    std::string error;  // set when a final parse failed; content is then the raw text
};

class ChatLayer {
 public:
    ChatLayer(const common_chat_templates* templates, const llama_vocab* vocab);
    ~ChatLayer();

    // `requestJson`: {messages (OpenAI shape; media parts as {type: "media_marker", text}),
    // tools?, tool_choice?, parallel_tool_calls?, json_schema?, add_generation_prompt?,
    // prefill_tool_call?}. Throws CodedError.
    ChatParams apply(const std::string& requestJson) const;
    // Parses generated text as llama-server does (common_chat_parse).
    ParsedChat parse(const std::string& text, bool partial, int32_t format, const std::string& parser,
                     const std::string& generationPrompt, bool continuation);
    // GBNF of a JSON schema; throws CodedError E_INVALID_SCHEMA.
    static std::string schemaToGrammar(const std::string& schemaJson);
    // Throws CodedError E_INVALID_GRAMMAR with llama.cpp's message when the grammar does not parse.
    void checkGrammar(const std::string& grammar) const;
    bool supportsTools() const;

 private:
    const common_chat_templates* templates_;
    const llama_vocab* vocab_;
    std::mutex mutex_;  // the parser cache
    std::map<std::string, std::shared_ptr<common_peg_arena>> parsers_;
};

}  // namespace mmlm
