#include "sequence.h"

#include <algorithm>
#include <chrono>

#include "common.h"
#include "llama.h"
#include "sampling.h"

namespace mmlm {

namespace {

// Length of the longest suffix of `text` that is an incomplete but so-far valid UTF-8
// sequence. Holding those bytes back means every piece handed to JS decodes the same
// on its own as inside the whole text.
size_t incompleteUtf8Tail(const std::string& text) {
    const size_t n = text.size();
    for (size_t back = 1; back <= 3 && back <= n; ++back) {
        const auto c = static_cast<unsigned char>(text[n - back]);
        if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
        size_t need = 0;
        if (c >= 0xC2 && c <= 0xDF)
            need = 2;
        else if (c >= 0xE0 && c <= 0xEF)
            need = 3;
        else if (c >= 0xF0 && c <= 0xF4)
            need = 4;
        return need > back ? back : 0;
    }
    return 0;
}

// Length of the longest suffix of `text` that is a proper prefix of some stop string.
size_t partialStopTail(const std::string& text, const std::vector<std::string>& stops) {
    size_t best = 0;
    for (const std::string& stop : stops) {
        for (size_t len = std::min(stop.size() - 1, text.size()); len > best; --len) {
            if (text.compare(text.size() - len, len, stop, 0, len) == 0) {
                best = len;
                break;
            }
        }
    }
    return best;
}

}  // namespace

TextOutput::TextOutput(std::vector<std::string> stops) : stops_(std::move(stops)) {
    for (const std::string& stop : stops_) maxStop_ = std::max(maxStop_, stop.size());
}

bool TextOutput::append(const std::string& piece, const std::function<void(const std::string&)>& emit) {
    text_ += piece;
    // Stop strings: search only where a new match can start.
    if (maxStop_ > 0) {
        const size_t from = emitted_ > maxStop_ ? emitted_ - maxStop_ : 0;
        size_t cut = std::string::npos;
        for (const std::string& stop : stops_) {
            const size_t at = text_.find(stop, from);
            if (at != std::string::npos && at < cut) cut = at;
        }
        if (cut != std::string::npos) {
            text_.resize(std::max(cut, emitted_));
            return true;
        }
    }
    const size_t hold = std::max(incompleteUtf8Tail(text_), partialStopTail(text_, stops_));
    if (text_.size() - hold > emitted_) {
        if (emit) emit(text_.substr(emitted_, text_.size() - hold - emitted_));
        emitted_ = text_.size() - hold;
    }
    return false;
}

void TextOutput::flush(const std::function<void(const std::string&)>& emit) {
    if (text_.size() > emitted_ && emit) emit(text_.substr(emitted_));
    emitted_ = text_.size();
}

void SamplerDeleter::operator()(common_sampler* s) const { common_sampler_free(s); }

Sequence::Sequence(std::unique_ptr<GenerateJob> j, Prompt p)
    : job(std::move(j)), prompt(std::move(p)), output(job->params.stop) {}

void Sequence::advanceText(size_t n) {
    offset += n;
    if (offset >= prompt.chunks[chunk].tokens.size()) {
        ++chunk;
        offset = 0;
    }
}

common_sampler* makeSampler(const llama_model* model, const GenerateParams& g,
                            const std::vector<llama_logit_bias>& eogBias) {
    const SamplingParams& p = g.sampling;
    const llama_vocab* vocab = llama_model_get_vocab(model);
    common_params_sampling sp;
    sp.temp = p.temperature;
    sp.top_k = p.topK;
    sp.top_p = p.topP;
    sp.min_p = p.minP;
    sp.penalty_repeat = p.repeatPenalty;
    sp.penalty_last_n = p.repeatLastN;
    sp.penalty_present = p.presencePenalty;
    sp.penalty_freq = p.frequencyPenalty;
    sp.seed = p.seed;
    sp.ignore_eos = g.ignoreEos;
    sp.logit_bias_eog = eogBias;
    if (g.ignoreEos) sp.logit_bias.insert(sp.logit_bias.end(), eogBias.begin(), eogBias.end());
    for (const auto& bias : g.logitBias) sp.logit_bias.push_back({bias.first, bias.second});

    // The grammar, set up as llama-server does: preserved tokens by id, and a trigger word that
    // is one preserved token becomes a token trigger.
    const OutputConstraint& c = g.constraint;
    if (c.kind != OutputConstraint::Kind::None && !c.grammar.empty()) {
        sp.grammar = common_grammar(
            c.kind == OutputConstraint::Kind::User ? COMMON_GRAMMAR_TYPE_USER : COMMON_GRAMMAR_TYPE_TOOL_CALLS,
            c.grammar);
        sp.grammar_lazy = c.lazy;
        for (const std::string& text : c.preservedTokens) {
            std::vector<llama_token> ids = common_tokenize(vocab, text, false, true);
            if (ids.size() == 1) sp.preserved_tokens.insert(ids[0]);
        }
        for (const GrammarTrigger& t : c.triggers) {
            common_grammar_trigger trigger;
            trigger.type = static_cast<common_grammar_trigger_type>(t.type);
            trigger.value = t.value;
            if (trigger.type == COMMON_GRAMMAR_TRIGGER_TYPE_WORD) {
                std::vector<llama_token> ids = common_tokenize(vocab, t.value, false, true);
                if (ids.size() == 1 && sp.preserved_tokens.count(ids[0]) > 0) {
                    trigger.type = COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN;
                    trigger.token = ids[0];
                }
            }
            sp.grammar_triggers.push_back(std::move(trigger));
        }
        if (c.kind == OutputConstraint::Kind::Template) sp.generation_prompt = c.generationPrompt;
    }
    common_sampler* sampler = nullptr;
    try {
        sampler = common_sampler_init(const_cast<llama_model*>(model), sp);
    } catch (const std::exception& e) {
        if (sp.grammar.empty()) throw CodedError("E_INVALID_ARGUMENT", e.what());
        throw CodedError("E_INVALID_GRAMMAR", std::string("the grammar could not be set up: ") + e.what());
    }
    if (sampler == nullptr) throw CodedError("E_ENGINE", "common_sampler_init failed");
    return sampler;
}

}  // namespace mmlm
