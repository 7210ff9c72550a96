// The chat page's script. It talks only to this server's own OpenAI API (relative URLs, so the
// page works under any mount path), keeps the conversation in memory, and sends media as data:
// URLs (audio as input_audio base64). Compiled by tsconfig.web.json and inlined into
// lib/web/chat.html by scripts/build-web.mjs.

interface PageConfig {
  maxBodyBytes: number;
  apiKeyRequired: boolean;
  video: { fps: number; maxFrames: number; maxFramesLimit: number };
}

interface ModelObject {
  id: string;
  capabilities?: Capabilities;
  meta?: { context_size?: number; architecture?: string; projector?: string };
}

interface Capabilities {
  vision: boolean;
  video: boolean;
  audio: boolean;
}

type Part =
  | { type: "text"; text: string }
  | { type: "image_url"; image_url: { url: string } }
  | { type: "video_url"; video_url: { url: string } }
  | { type: "input_audio"; input_audio: { data: string; format: string } };

interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

interface Turn {
  role: "system" | "user" | "assistant";
  content: string | Part[] | null;
  /** An assistant turn's tool calls, as the server sent them. */
  tool_calls?: ToolCall[];
}

type MediaKind = "image" | "video" | "audio";

interface Attachment {
  kind: MediaKind;
  name: string;
  size: number;
  /** Object URL for thumbnails and players; kept while the conversation shows it. */
  preview: string;
  dataUrl: Promise<string>;
  /** An audio clip's input_audio format ("wav", "mp3", "webm", ...). */
  format?: string;
}

interface Settings {
  temperature: number;
  maxTokens: number | null;
  fps: number | null;
  maxFrames: number | null;
  system: string;
  apiKey: string;
  /** Ask for a JSON reply (response_format). */
  json: boolean;
  /** The JSON schema the reply must match, as typed; empty: any JSON object. */
  schema: string;
  /** OpenAI function tools as a JSON array, as typed; empty: none. */
  tools: string;
  toolChoice: "auto" | "required" | "none";
}

interface ServerErrorBody {
  error?: { message?: string; code?: string; type?: string };
}

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  prompt_tokens_details?: { cached_tokens?: number };
}

const SETTINGS_KEY = "multimodal-lm:settings";

const config: PageConfig = JSON.parse(document.getElementById("config")?.textContent ?? "null") ?? {
  maxBodyBytes: 64 * 1024 * 1024,
  apiKeyRequired: false,
  video: { fps: 2, maxFrames: 32, maxFramesLimit: 1024 },
};

// "/chat" and "/chat/" both serve the page; API paths are relative to the folder form.
const base = location.pathname.endsWith("/") ? location.pathname : `${location.pathname}/`;
const api = (path: string) => `${base}${path}`;

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`The page has no #${id}`);
  return found as T;
}

const ui = {
  modelName: element<HTMLSpanElement>("model-name"),
  capabilities: element<HTMLSpanElement>("capabilities"),
  newChat: element<HTMLButtonElement>("new-chat"),
  settingsToggle: element<HTMLButtonElement>("settings-toggle"),
  settings: element<HTMLFormElement>("settings"),
  temperature: element<HTMLInputElement>("set-temperature"),
  maxTokens: element<HTMLInputElement>("set-max-tokens"),
  fps: element<HTMLInputElement>("set-fps"),
  maxFrames: element<HTMLInputElement>("set-max-frames"),
  system: element<HTMLTextAreaElement>("set-system"),
  json: element<HTMLInputElement>("set-json"),
  schemaField: element<HTMLLabelElement>("schema-field"),
  schema: element<HTMLTextAreaElement>("set-schema"),
  tools: element<HTMLTextAreaElement>("set-tools"),
  toolChoiceField: element<HTMLLabelElement>("tool-choice-field"),
  toolChoice: element<HTMLSelectElement>("set-tool-choice"),
  apiKeyField: element<HTMLLabelElement>("api-key-field"),
  apiKey: element<HTMLInputElement>("set-api-key"),
  settingsError: element<HTMLParagraphElement>("settings-error"),
  settingsReset: element<HTMLButtonElement>("settings-reset"),
  settingsClose: element<HTMLButtonElement>("settings-close"),
  log: element<HTMLElement>("log"),
  empty: element<HTMLDivElement>("empty"),
  composer: element<HTMLFormElement>("composer"),
  attachments: element<HTMLDivElement>("attachments"),
  attach: element<HTMLLabelElement>("attach"),
  file: element<HTMLInputElement>("file"),
  record: element<HTMLButtonElement>("record"),
  emptyLead: element<HTMLParagraphElement>("empty-lead"),
  prompt: element<HTMLTextAreaElement>("prompt"),
  send: element<HTMLButtonElement>("send"),
  stop: element<HTMLButtonElement>("stop"),
  notice: element<HTMLDivElement>("notice"),
  dropOverlay: element<HTMLDivElement>("drop-overlay"),
};

const DEFAULT_SETTINGS: Settings = { temperature: 0.8, maxTokens: null, fps: null, maxFrames: null, system: "", apiKey: "", json: false, schema: "", tools: "", toolChoice: "auto" };

const state = {
  model: null as ModelObject | null,
  history: [] as Turn[],
  pending: [] as Attachment[],
  /** Object URLs shown in the conversation, freed by New chat. */
  shown: [] as string[],
  running: null as AbortController | null,
  /** The microphone recording under way, if any. */
  recording: null as Recording | null,
};

interface Recording {
  recorder: MediaRecorder;
  stream: MediaStream;
  chunks: Blob[];
  started: number;
  timer: number;
  /** False when the recording is thrown away (New chat) rather than attached. */
  keep: boolean;
}

// ---- small helpers ----

function make<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function byteSize(bytes: number): string {
  if (bytes < 1024 * 1024) return `${Math.max(1, Math.round(bytes / 1024))} KiB`;
  return `${(bytes / (1024 * 1024)).toFixed(bytes < 10 * 1024 * 1024 ? 1 : 0)} MiB`;
}

/** JSON text indented for reading; anything that does not parse (cut short, say) as it is. */
function pretty(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

function notice(text: string): void {
  ui.notice.textContent = text;
}

function nearBottom(): boolean {
  return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;
}

function scrollDown(force = false): void {
  if (force || nearBottom()) ui.log.scrollTop = ui.log.scrollHeight;
}

function readDataUrl(file: File, kind: MediaKind): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => {
      const url = String(reader.result);
      // Files of an unknown type read as application/octet-stream; the server sniffs the bytes anyway.
      resolve(url.startsWith("data:;") || url.startsWith("data:application/octet-stream") ? url.replace(/^data:[^;,]*/, `data:${kind}/*`) : url);
    };
    reader.onerror = () => reject(reader.error ?? new Error(`Cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

const VIDEO_EXTENSIONS = /\.(mp4|m4v|mov|webm|mkv|avi|mpe?g|ogv|3gp|flv|wmv|ts)$/i;
const IMAGE_EXTENSIONS = /\.(png|jpe?g|gif|webp|avif|tiff?|bmp|svg|heic|heif)$/i;
const AUDIO_EXTENSIONS = /\.(wav|wave|mp3|ogg|oga|opus|flac|m4a|aac|weba|aiff?|caf|amr|wma|ac3)$/i;

function kindOf(file: File): MediaKind | null {
  if (file.type.startsWith("image/")) return "image";
  if (file.type.startsWith("video/")) return "video";
  if (file.type.startsWith("audio/")) return "audio";
  if (!file.type && VIDEO_EXTENSIONS.test(file.name)) return "video";
  if (!file.type && IMAGE_EXTENSIONS.test(file.name)) return "image";
  if (!file.type && AUDIO_EXTENSIONS.test(file.name)) return "audio";
  return null;
}

/** input_audio's format for an audio MIME type (parameters such as ";codecs=opus" ignored). */
const AUDIO_FORMATS: Record<string, string> = {
  "audio/wav": "wav",
  "audio/wave": "wav",
  "audio/x-wav": "wav",
  "audio/vnd.wave": "wav",
  "audio/x-pn-wav": "wav",
  "audio/mpeg": "mp3",
  "audio/mp3": "mp3",
  "audio/mpeg3": "mp3",
  "audio/x-mpeg-3": "mp3",
  "audio/ogg": "ogg",
  "audio/opus": "ogg",
  "audio/flac": "flac",
  "audio/x-flac": "flac",
  "audio/mp4": "m4a",
  "audio/m4a": "m4a",
  "audio/x-m4a": "m4a",
  "audio/aac": "aac",
  "audio/x-aac": "aac",
  "audio/webm": "webm",
  "audio/aiff": "aiff",
  "audio/x-aiff": "aiff",
  "audio/x-caf": "caf",
  "audio/amr": "amr",
  "audio/x-ms-wma": "wma",
};

/**
 * The format an audio file is sent as: from its MIME type, else its extension, else "wav" (the
 * server reads the bytes with ffmpeg whatever the format says; it must only be a plain word).
 */
function audioFormat(file: File): string {
  const type = file.type.split(";")[0]!.trim().toLowerCase();
  const known = AUDIO_FORMATS[type];
  if (known) return known;
  const extension = /\.([a-z0-9]{1,16})$/i.exec(file.name)?.[1]?.toLowerCase();
  if (extension) return extension === "wave" ? "wav" : extension === "oga" || extension === "opus" ? "ogg" : extension === "weba" ? "webm" : extension;
  const subtype = type.startsWith("audio/") ? type.slice(6).replace(/^x-/, "").replace(/[^a-z0-9]/g, "") : "";
  return /^[a-z0-9]{1,16}$/.test(subtype) ? subtype : "wav";
}

function mediaElement(kind: MediaKind, url: string, name: string): HTMLImageElement | HTMLVideoElement | HTMLAudioElement {
  if (kind === "image") {
    const img = make("img");
    img.src = url;
    img.alt = name;
    return img;
  }
  if (kind === "audio") {
    // A player, so what is sent can be listened to first (and again in the conversation).
    const audio = make("audio");
    audio.src = url;
    audio.controls = true;
    audio.preload = "metadata";
    audio.title = name;
    audio.setAttribute("aria-label", name);
    return audio;
  }
  const video = make("video");
  video.src = url;
  video.muted = true;
  video.preload = "metadata";
  video.title = name;
  return video;
}

// ---- settings ----

function readStoredSettings(): Settings {
  try {
    const stored = JSON.parse(localStorage.getItem(SETTINGS_KEY) ?? "{}") as Partial<Settings>;
    return { ...DEFAULT_SETTINGS, ...stored };
  } catch {
    return { ...DEFAULT_SETTINGS };
  }
}

function showSettings(settings: Settings): void {
  ui.temperature.value = String(settings.temperature);
  ui.maxTokens.value = settings.maxTokens === null ? "" : String(settings.maxTokens);
  ui.fps.value = settings.fps === null ? "" : String(settings.fps);
  ui.maxFrames.value = settings.maxFrames === null ? "" : String(settings.maxFrames);
  ui.system.value = settings.system;
  ui.apiKey.value = settings.apiKey;
  ui.json.checked = settings.json;
  ui.schema.value = settings.schema;
  ui.schemaField.hidden = !settings.json;
  ui.tools.value = settings.tools;
  ui.toolChoice.value = settings.toolChoice;
  ui.toolChoiceField.hidden = settings.tools.trim() === "";
}

/** The tools typed in (a JSON array of function tools), or an error message. */
function toolsOf(settings: Settings): unknown[] | string {
  let tools: unknown;
  try {
    tools = JSON.parse(settings.tools);
  } catch (error) {
    return `The tools are not valid JSON: ${(error as Error).message}.`;
  }
  if (!Array.isArray(tools) || tools.some((tool) => typeof tool !== "object" || tool === null || Array.isArray(tool))) {
    return 'The tools must be a JSON array of function tools, e.g. [{"type": "function", "function": {"name": "crop", "parameters": {...}}}].';
  }
  return tools;
}

/** The response_format for JSON output: any JSON object, or one matching the schema typed in. */
function responseFormat(settings: Settings): Record<string, unknown> | string {
  const text = settings.schema.trim();
  if (text === "") return { type: "json_object" };
  let schema: unknown;
  try {
    schema = JSON.parse(text);
  } catch (error) {
    return `The JSON schema is not valid JSON: ${(error as Error).message}.`;
  }
  if (typeof schema !== "object" || schema === null || Array.isArray(schema)) return "The JSON schema must be a JSON object (or empty, for any JSON object).";
  return { type: "json_schema", json_schema: { name: "reply", schema, strict: true } };
}

/** The settings as entered, or an error message naming the field to fix. */
function currentSettings(): Settings | string {
  const number = (input: HTMLInputElement, label: string, integer: boolean): number | null | string => {
    const text = input.value.trim();
    if (text === "") return null;
    const value = Number(text);
    const min = Number(input.min);
    const max = input.max === "" ? Infinity : Number(input.max);
    if (!Number.isFinite(value) || (integer && !Number.isInteger(value)) || value < min || value > max) {
      const range = max === Infinity ? `at least ${min}` : `from ${min} to ${max}`;
      return `${label} must be ${integer ? "a whole number" : "a number"} ${range}, not "${text}".`;
    }
    return value;
  };
  const temperature = number(ui.temperature, "Temperature", false);
  const maxTokens = number(ui.maxTokens, "Max tokens", true);
  const fps = number(ui.fps, "Video fps", false);
  const maxFrames = number(ui.maxFrames, "Max frames", true);
  for (const value of [temperature, maxTokens, fps, maxFrames]) if (typeof value === "string") return value;
  const settings: Settings = {
    temperature: (temperature as number | null) ?? DEFAULT_SETTINGS.temperature,
    maxTokens: maxTokens as number | null,
    fps: fps as number | null,
    maxFrames: maxFrames as number | null,
    system: ui.system.value,
    apiKey: ui.apiKey.value.trim(),
    json: ui.json.checked,
    schema: ui.schema.value,
    tools: ui.tools.value,
    toolChoice: ui.toolChoice.value as Settings["toolChoice"],
  };
  if (settings.json) {
    const format = responseFormat(settings);
    if (typeof format === "string") return format;
  }
  if (settings.tools.trim() !== "") {
    const tools = toolsOf(settings);
    if (typeof tools === "string") return tools;
  }
  return settings;
}

function saveSettings(): void {
  ui.schemaField.hidden = !ui.json.checked;
  ui.toolChoiceField.hidden = ui.tools.value.trim() === "";
  const settings = currentSettings();
  ui.settingsError.textContent = typeof settings === "string" ? settings : "";
  if (typeof settings !== "string") localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
}

function toggleSettings(open: boolean): void {
  ui.settings.hidden = !open;
  ui.settingsToggle.setAttribute("aria-expanded", String(open));
  if (open) ui.temperature.focus();
}

// ---- the model ----

function headers(json: boolean): Record<string, string> {
  const result: Record<string, string> = {};
  if (json) result["content-type"] = "application/json";
  const settings = currentSettings();
  const key = typeof settings === "string" ? ui.apiKey.value.trim() : settings.apiKey;
  if (key) result.authorization = `Bearer ${key}`;
  return result;
}

async function errorText(response: Response): Promise<{ title: string; message: string }> {
  let body: ServerErrorBody | null = null;
  try {
    body = (await response.json()) as ServerErrorBody;
  } catch {
    // Not JSON (a proxy's page, say): the status says enough.
  }
  const code = body?.error?.code;
  let message = body?.error?.message ?? (response.statusText || "The server gave no reason.");
  if (response.status === 401) message += " Enter the key under Settings → API key.";
  return { title: `Error ${response.status}${code ? ` · ${code}` : ""}`, message };
}

/** What a server that does not list capabilities is taken to offer (those came with audio). */
const DEFAULT_CAPABILITIES: Capabilities = { vision: true, video: true, audio: false };

function capabilitiesOf(model: ModelObject): Capabilities {
  return model.capabilities ?? DEFAULT_CAPABILITIES;
}

/** The media a model takes, as plural nouns: ["images", "videos", "audio"] or fewer. */
function mediaNouns(caps: Capabilities): string[] {
  return [caps.vision && "images", caps.vision && caps.video && "videos", caps.audio && "audio"].filter((noun): noun is string => !!noun);
}

/** "a", "a and b", "a, b and c" (or "or"). */
function wordList(words: string[], joiner: "and" | "or"): string {
  return words.length <= 1 ? (words[0] ?? "") : `${words.slice(0, -1).join(", ")} ${joiner} ${words[words.length - 1]}`;
}

/** Whether the microphone can be recorded from on this page (a secure context with MediaRecorder). */
function canRecord(): boolean {
  return !!navigator.mediaDevices?.getUserMedia && typeof MediaRecorder !== "undefined";
}

function showCapabilities(model: ModelObject): void {
  ui.modelName.textContent = model.id;
  document.title = `${model.id} · multimodal-lm`;
  const meta = model.meta;
  ui.modelName.title = [meta?.architecture && `architecture ${meta.architecture}`, meta?.projector && `projector ${meta.projector}`, meta?.context_size && `context ${meta.context_size} tokens`]
    .filter(Boolean)
    .join(", ");
  ui.capabilities.replaceChildren();
  const caps = capabilitiesOf(model);
  for (const [name, on] of Object.entries(caps) as Array<[string, boolean]>) {
    const badge = make("span", `cap ${on ? "on" : "off"}`, name);
    badge.title = on ? `This model takes ${name} input` : `This model does not take ${name} input`;
    badge.dataset.capability = name;
    badge.dataset.supported = String(on);
    ui.capabilities.append(badge);
  }
  // Only what the model takes is offered: the picker's types, the Record button, the hints.
  const nouns = mediaNouns(caps);
  const media = wordList(nouns, "or");
  ui.file.disabled = nouns.length === 0;
  ui.attach.classList.toggle("disabled", nouns.length === 0);
  ui.attach.title = nouns.length ? `Attach ${media}` : "This model has no vision or audio projector; it takes text only";
  ui.file.accept = [caps.vision && "image/*", caps.vision && caps.video && "video/*", caps.audio && "audio/*"].filter(Boolean).join(",");
  if (!caps.audio && state.recording) stopRecording(false);
  ui.record.hidden = !caps.audio;
  ui.record.title = canRecord()
    ? "Record from the microphone; the recording is attached, to play back before sending"
    : "The browser allows the microphone only on a secure page (https, or http://localhost)";
  ui.emptyLead.replaceChildren(
    ...(nouns.length
      ? [make("strong", undefined, `Drop ${media} here`), `, paste ${nouns.length === 1 && caps.audio ? "it" : "them"}, or use `, make("em", undefined, "Attach"), ...(caps.audio ? [" or ", make("em", undefined, "Record")] : []), ". Then ask a question."]
      : ["This model takes text only. Ask a question."]),
  );
  ui.prompt.placeholder = `${nouns.length ? `Ask about your ${media}` : "Ask a question"} (Enter sends, Shift+Enter adds a line)`;
}

async function loadModel(): Promise<void> {
  try {
    const response = await fetch(api("v1/models"), { headers: headers(false) });
    if (!response.ok) {
      const { title, message } = await errorText(response);
      ui.modelName.textContent = response.status === 401 ? "API key needed" : "unavailable";
      notice(`${title}: ${message}`);
      if (response.status === 401) toggleSettings(true);
      return;
    }
    const list = (await response.json()) as { data: ModelObject[] };
    const model = list.data[0];
    if (!model) throw new Error("the server lists no model");
    state.model = model;
    showCapabilities(model);
    if (ui.notice.textContent?.startsWith("Error 401")) notice("");
  } catch (error) {
    ui.modelName.textContent = "offline";
    notice(`Cannot reach the server (${(error as Error).message}). Is multimodal-lm serve still running?`);
  }
}

// ---- attachments ----

function addFiles(files: Iterable<File>): void {
  const refused: string[] = [];
  /** Media kinds among the refused files that this model does not take. */
  const unsupported = new Set<MediaKind>();
  const tooLarge: string[] = [];
  for (const file of files) {
    // Sent as base64, a file grows by a third; one that cannot fit in a request is refused now.
    if (Math.ceil(file.size / 3) * 4 > config.maxBodyBytes) {
      tooLarge.push(`${file.name || "a pasted item"} (${byteSize(file.size)})`);
      continue;
    }
    const kind = kindOf(file);
    // Before the model is known, anything that is media is taken (the server has the last word).
    const caps = state.model ? capabilitiesOf(state.model) : null;
    const takes = kind !== null && (!caps || (kind === "image" && caps.vision) || (kind === "video" && caps.vision && caps.video) || (kind === "audio" && caps.audio));
    if (!takes) {
      refused.push(file.name || "a pasted item");
      if (kind) unsupported.add(kind);
      continue;
    }
    const attachment: Attachment = { kind, name: file.name || `pasted ${kind}`, size: file.size, preview: URL.createObjectURL(file), dataUrl: readDataUrl(file, kind) };
    if (kind === "audio") attachment.format = audioFormat(file);
    // Reported when sending; don't leave an unhandled rejection meanwhile.
    attachment.dataUrl.catch(() => undefined);
    state.pending.push(attachment);
  }
  renderPending();
  const problems: string[] = [];
  if (refused.length) {
    const nouns = mediaNouns(state.model ? capabilitiesOf(state.model) : DEFAULT_CAPABILITIES);
    const takes = nouns.length ? wordList(nouns, "and") : "text only";
    const missing = [...unsupported].map((kind) => ({ image: "images", video: "videos", audio: "audio" })[kind]);
    problems.push(
      missing.length
        ? `Not attached: ${refused.join(", ")}. This model does not take ${wordList(missing, "or")}; it takes ${takes}.`
        : `Not attached: ${refused.join(", ")}. This model takes ${takes}.`,
    );
  }
  if (tooLarge.length) {
    problems.push(
      `Too large to send: ${tooLarge.join(", ")}. The server takes requests of at most ${byteSize(config.maxBodyBytes)}, ` +
        "and media travel as base64 (a third larger); raise it with the server's --max-body-mb.",
    );
  }
  notice(problems.join(" "));
}

function renderPending(): void {
  ui.attachments.replaceChildren(
    ...state.pending.map((attachment, index) => {
      const thumb = make("div", "thumb");
      thumb.title = `${attachment.name} (${byteSize(attachment.size)})`;
      thumb.dataset.kind = attachment.kind;
      thumb.append(mediaBlock(attachment));
      if (attachment.kind === "video") thumb.append(make("span", "kind", "video"));
      const remove = make("button", "remove", "×");
      remove.type = "button";
      remove.setAttribute("aria-label", `Remove ${attachment.name}`);
      remove.addEventListener("click", () => {
        URL.revokeObjectURL(attachment.preview);
        state.pending.splice(index, 1);
        renderPending();
      });
      thumb.append(remove);
      return thumb;
    }),
  );
}

/** An attachment as shown: an image or video, or an audio clip's name over its player. */
function mediaBlock(attachment: Attachment): HTMLElement {
  const shown = mediaElement(attachment.kind, attachment.preview, attachment.name);
  if (attachment.kind !== "audio") return shown;
  const clip = make("div", "clip");
  clip.append(make("span", "clip-name", attachment.name), shown);
  return clip;
}

// ---- recording from the microphone ----

/** What to ask MediaRecorder for, best first; it may give something else, which is sent as it is. */
const RECORDING_TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/ogg", "audio/mp4"];

function microphoneProblem(error: unknown): string {
  const name = error instanceof DOMException ? error.name : "";
  const instead = "or attach an audio file instead.";
  if (name === "NotAllowedError" || name === "SecurityError") {
    return `Microphone access was denied. Allow this page to use the microphone (the icon in the address bar, or the browser's site settings) and press Record again, ${instead}`;
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") return `No microphone was found. Connect one and press Record again, ${instead}`;
  if (name === "NotReadableError" || name === "AbortError") return `The microphone could not be started (another program may be using it). Try Record again, ${instead}`;
  return `Cannot record from the microphone: ${(error as Error)?.message ?? String(error)}`;
}

function clock(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

function showRecordButton(): void {
  const recording = state.recording;
  ui.record.classList.toggle("recording", recording !== null);
  ui.record.setAttribute("aria-pressed", String(recording !== null));
  ui.record.textContent = recording ? `Stop recording ${clock(performance.now() - recording.started)}` : "Record";
}

async function startRecording(): Promise<void> {
  if (state.recording) return;
  if (!canRecord()) {
    notice(
      window.isSecureContext
        ? "This browser cannot record audio (it has no MediaRecorder); attach an audio file instead."
        : "The browser allows the microphone only on a secure page: open the chat page over https or at http://localhost, or attach an audio file instead.",
    );
    return;
  }
  ui.record.disabled = true;
  let stream: MediaStream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    notice(microphoneProblem(error));
    return;
  } finally {
    ui.record.disabled = false;
  }
  if (state.recording || ui.record.hidden) {
    // Another recording began, or the model changed to one without audio, meanwhile.
    for (const track of stream.getTracks()) track.stop();
    return;
  }
  const mimeType = RECORDING_TYPES.find((type) => MediaRecorder.isTypeSupported(type));
  let recorder: MediaRecorder;
  try {
    recorder = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
    recorder.start();
  } catch (error) {
    for (const track of stream.getTracks()) track.stop();
    notice(`Cannot record from the microphone: ${(error as Error).message}`);
    return;
  }
  const recording: Recording = { recorder, stream, chunks: [], started: performance.now(), timer: 0, keep: true };
  recorder.addEventListener("dataavailable", (event) => {
    if (event.data.size > 0) recording.chunks.push(event.data);
  });
  recorder.addEventListener("stop", () => finishRecording(recording));
  recorder.addEventListener("error", (event) => {
    recording.keep = false;
    notice(`The recording failed: ${(event as ErrorEvent).message || "the browser's recorder stopped with an error"}.`);
    finishRecording(recording);
  });
  // A microphone unplugged mid-recording ends the track: keep what was recorded.
  for (const track of stream.getAudioTracks()) track.addEventListener("ended", () => stopRecording(true));
  recording.timer = window.setInterval(showRecordButton, 250);
  state.recording = recording;
  notice("");
  showRecordButton();
}

/** Ends the recording; kept, it becomes an attachment once the recorder has handed over its data. */
function stopRecording(keep: boolean): void {
  const recording = state.recording;
  if (!recording) return;
  recording.keep &&= keep;
  if (recording.recorder.state !== "inactive") recording.recorder.stop();
  else finishRecording(recording);
}

function finishRecording(recording: Recording): void {
  window.clearInterval(recording.timer);
  for (const track of recording.stream.getTracks()) track.stop();
  if (state.recording === recording) state.recording = null;
  showRecordButton();
  if (!recording.keep) return;
  recording.keep = false;
  const type = recording.recorder.mimeType || recording.chunks[0]?.type || "audio/webm";
  const blob = new Blob(recording.chunks, { type });
  if (blob.size === 0) {
    notice("The recording is empty: the microphone gave no sound. Check the browser's microphone settings and record again.");
    return;
  }
  const now = new Date();
  const stamp = [now.getHours(), now.getMinutes(), now.getSeconds()].map((n) => String(n).padStart(2, "0")).join("-");
  const probe = new File([], "", { type });
  const format = audioFormat(probe);
  addFiles([new File([blob], `recording ${stamp}.${format}`, { type })]);
}

// ---- the conversation ----

function addMessage(className: string): HTMLElement {
  ui.empty.hidden = true;
  const article = make("article", `message ${className}`);
  ui.log.append(article);
  return article;
}

function showError(title: string, message: string): void {
  const article = addMessage("error");
  article.setAttribute("role", "alert");
  article.append(make("div", "title", title), make("div", "text", message));
  scrollDown(true);
}

function setRunning(controller: AbortController | null): void {
  state.running = controller;
  ui.send.hidden = controller !== null;
  ui.stop.hidden = controller === null;
  if (controller === null) ui.prompt.focus();
}

function statsLine(generated: number, usage: Usage | null, firstTokenMs: number | null, elapsedMs: number, finish: string | null): string {
  const parts: string[] = [];
  const tokens = usage?.completion_tokens ?? generated;
  parts.push(`${tokens} token${tokens === 1 ? "" : "s"}`);
  if (firstTokenMs !== null && tokens > 1 && elapsedMs > firstTokenMs) parts.push(`${((tokens - 1) / ((elapsedMs - firstTokenMs) / 1000)).toFixed(1)} tok/s`);
  if (firstTokenMs !== null) parts.push(`first token ${(firstTokenMs / 1000).toFixed(2)} s`);
  if (usage) {
    const cached = usage.prompt_tokens_details?.cached_tokens ?? 0;
    parts.push(`prompt ${usage.prompt_tokens} tokens${cached ? ` (${cached} cached)` : ""}`);
  }
  if (finish === "length") parts.push("stopped at the token limit");
  if (finish === "tool_calls") parts.push("ended with a tool call");
  return parts.join(" · ");
}

interface ToolCallDelta {
  index: number;
  id?: string;
  function?: { name?: string; arguments?: string };
}

interface EventHandlers {
  onText(text: string): void;
  /** A tool call's first delta has its id and name; later ones add to its arguments. */
  onToolCall(delta: ToolCallDelta): void;
}

/** Reads the server-sent events of one completion, passing on each text piece and tool-call delta. */
async function readEvents(response: Response, { onText, onToolCall }: EventHandlers): Promise<{ usage: Usage | null; finish: string | null }> {
  if (!response.body) throw new Error("The response has no body.");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let usage: Usage | null = null;
  let finish: string | null = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end: number;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = event
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data === "") continue;
      if (data === "[DONE]") return { usage, finish };
      const chunk = JSON.parse(data) as ServerErrorBody & {
        choices?: Array<{ delta?: { content?: string | null; tool_calls?: ToolCallDelta[] }; finish_reason?: string | null }>;
        usage?: Usage | null;
      };
      if (chunk.error) throw new ServerError(`Error · ${chunk.error.code ?? "stream"}`, chunk.error.message ?? "The generation failed.");
      const choice = chunk.choices?.[0];
      if (choice?.delta?.content) onText(choice.delta.content);
      for (const call of choice?.delta?.tool_calls ?? []) onToolCall(call);
      if (choice?.finish_reason) finish = choice.finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
  }
  throw new Error("The server closed the stream before it was complete.");
}

class ServerError extends Error {
  constructor(
    readonly title: string,
    message: string,
  ) {
    super(message);
  }
}

async function send(): Promise<void> {
  if (state.running) return;
  const settings = currentSettings();
  if (typeof settings === "string") {
    toggleSettings(true);
    ui.settingsError.textContent = settings;
    return;
  }
  if (state.recording) {
    notice("Still recording: press Stop recording first. The recording is then attached, to play back before sending.");
    return;
  }
  const text = ui.prompt.value.trim();
  const attachments = state.pending;
  if (!text && attachments.length === 0) {
    const nouns = state.model ? mediaNouns(capabilitiesOf(state.model)) : [];
    notice(nouns.length ? `Type a message or attach ${wordList(nouns, "or")} first.` : "Type a message first.");
    return;
  }

  let parts: Part[];
  try {
    parts = await Promise.all(
      attachments.map(async (a): Promise<Part> => {
        const url = await a.dataUrl;
        if (a.kind === "image") return { type: "image_url", image_url: { url } };
        if (a.kind === "video") return { type: "video_url", video_url: { url } };
        // OpenAI's audio part: the bare base64 and a format word.
        return { type: "input_audio", input_audio: { data: url.slice(url.indexOf(",") + 1), format: a.format ?? "wav" } };
      }),
    );
  } catch (error) {
    notice(`Cannot read an attachment: ${(error as Error).message}`);
    return;
  }
  if (text) parts.push({ type: "text", text });
  const userTurn: Turn = { role: "user", content: parts.length === 1 && parts[0]!.type === "text" ? text : parts };

  const messages: Turn[] = [...(settings.system.trim() ? [{ role: "system" as const, content: settings.system }] : []), ...state.history, userTurn];
  const body: Record<string, unknown> = {
    model: "default",
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: settings.temperature,
  };
  if (settings.maxTokens !== null) body.max_tokens = settings.maxTokens;
  if (settings.fps !== null) body.video_fps = settings.fps;
  if (settings.maxFrames !== null) body.video_max_frames = settings.maxFrames;
  if (settings.json) body.response_format = responseFormat(settings);
  if (settings.tools.trim() !== "") {
    body.tools = toolsOf(settings);
    body.tool_choice = settings.toolChoice;
  }
  const json = JSON.stringify(body);
  const size = new Blob([json]).size;
  if (size > config.maxBodyBytes) {
    notice(
      `This message and the conversation before it come to ${byteSize(size)}, and the server accepts at most ${byteSize(config.maxBodyBytes)} per request. ` +
        "Remove an attachment, start a new chat, or raise the server's --max-body-mb.",
    );
    return;
  }

  // The message goes into the conversation now; the attachments move with it.
  const userMessage = addMessage("user");
  if (attachments.length) {
    const media = make("div", "media");
    for (const a of attachments) {
      media.append(mediaBlock(a));
      state.shown.push(a.preview);
    }
    userMessage.append(media);
  }
  if (text) userMessage.append(make("div", "text", text));
  state.history.push(userTurn);
  state.pending = [];
  renderPending();
  ui.prompt.value = "";
  notice("");

  const reply = addMessage("assistant streaming");
  const replyText = make("div", settings.json ? "text json" : "text");
  const toolBox = make("div", "tool-calls");
  const meta = make("div", "meta", "waiting for the model…");
  reply.append(replyText, toolBox, meta);
  scrollDown(true);
  const calls: Array<ToolCall & { shown: HTMLPreElement }> = [];

  const controller = new AbortController();
  setRunning(controller);
  const started = performance.now();
  let firstTokenMs: number | null = null;
  let generated = 0;
  let answer = "";
  try {
    const response = await fetch(api("v1/chat/completions"), { method: "POST", headers: headers(true), body: json, signal: controller.signal });
    if (!response.ok) {
      const { title, message } = await errorText(response);
      throw new ServerError(title, message);
    }
    meta.textContent = "";
    const { usage, finish } = await readEvents(response, {
      onText: (piece) => {
        if (firstTokenMs === null) firstTokenMs = performance.now() - started;
        generated++;
        answer += piece;
        replyText.textContent = answer;
        scrollDown();
      },
      onToolCall: (delta) => {
        if (firstTokenMs === null) firstTokenMs = performance.now() - started;
        generated++;
        let call = calls[delta.index];
        if (!call) {
          const box = make("div", "tool-call");
          const shown = make("pre", "arguments");
          box.append(make("div", "name", delta.function?.name ?? "a function"), shown);
          toolBox.append(box);
          call = { id: delta.id ?? `call_${delta.index}`, type: "function", function: { name: delta.function?.name ?? "", arguments: "" }, shown };
          calls[delta.index] = call;
        }
        call.function.arguments += delta.function?.arguments ?? "";
        call.shown.textContent = call.function.arguments;
        scrollDown();
      },
    });
    // Complete JSON (the reply in JSON mode, a call's arguments) is shown indented.
    if (settings.json) replyText.textContent = pretty(answer);
    for (const call of calls) if (call) call.shown.textContent = pretty(call.function.arguments);
    meta.textContent = statsLine(generated, usage, firstTokenMs, performance.now() - started, finish);
  } catch (error) {
    if (controller.signal.aborted) {
      meta.textContent = `stopped after ${generated} token${generated === 1 ? "" : "s"}`;
      meta.classList.add("stopped");
    } else {
      reply.remove();
      if (error instanceof ServerError) showError(error.title, error.message);
      else showError("Cannot reach the server", `${(error as Error).message}. Is multimodal-lm serve still running?`);
    }
    // A turn stopped or failed before any reply is taken back out of the conversation: the next
    // one must not be built on a question without an answer (templates such as Gemma's insist
    // that user and assistant alternate).
    if (!answer && calls.length === 0) {
      state.history.pop();
      userMessage.classList.add("failed");
    }
  } finally {
    reply.classList.remove("streaming");
    const toolCalls = calls.filter(Boolean).map(({ id, type, function: fn }): ToolCall => ({ id, type, function: { ...fn } }));
    if (toolCalls.length > 0) state.history.push({ role: "assistant", content: answer || null, tool_calls: toolCalls });
    else if (answer) state.history.push({ role: "assistant", content: answer });
    setRunning(null);
  }
}

function newChat(): void {
  state.running?.abort();
  stopRecording(false);
  for (const url of state.shown) URL.revokeObjectURL(url);
  for (const a of state.pending) URL.revokeObjectURL(a.preview);
  state.shown = [];
  state.pending = [];
  state.history = [];
  renderPending();
  ui.log.replaceChildren(ui.empty);
  ui.empty.hidden = false;
  notice("");
  ui.prompt.focus();
}

// ---- wiring ----

showSettings(readStoredSettings());
ui.fps.placeholder = `${config.video.fps} (server default)`;
ui.maxFrames.placeholder = `${config.video.maxFrames} (server default)`;
ui.maxFrames.max = String(config.video.maxFramesLimit);
ui.apiKeyField.hidden = !config.apiKeyRequired && !ui.apiKey.value;

ui.settingsToggle.addEventListener("click", () => toggleSettings(ui.settings.hidden));
ui.settingsClose.addEventListener("click", () => toggleSettings(false));
ui.settings.addEventListener("submit", (event) => event.preventDefault());
ui.settings.addEventListener("input", saveSettings);
ui.settingsReset.addEventListener("click", () => {
  showSettings(DEFAULT_SETTINGS);
  saveSettings();
});
ui.apiKey.addEventListener("change", () => void loadModel());

ui.newChat.addEventListener("click", newChat);
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  void send();
});
ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    void send();
  }
});
ui.stop.addEventListener("click", () => state.running?.abort());
// The label opens the file picker on click; make it work from the keyboard too.
ui.attach.addEventListener("keydown", (event) => {
  if ((event.key === "Enter" || event.key === " ") && !ui.file.disabled) {
    event.preventDefault();
    ui.file.click();
  }
});
ui.record.addEventListener("click", () => {
  if (state.recording) stopRecording(true);
  else void startRecording();
});
ui.file.addEventListener("change", () => {
  if (ui.file.files) addFiles(ui.file.files);
  ui.file.value = "";
});

document.addEventListener("paste", (event) => {
  const files = event.clipboardData?.files;
  if (files && files.length > 0) {
    event.preventDefault();
    addFiles(files);
  }
});

let dragDepth = 0;
const hasFiles = (event: DragEvent) => event.dataTransfer?.types.includes("Files") ?? false;
window.addEventListener("dragenter", (event) => {
  if (!hasFiles(event)) return;
  dragDepth++;
  ui.dropOverlay.hidden = false;
});
window.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) ui.dropOverlay.hidden = true;
});
window.addEventListener("dragover", (event) => {
  if (hasFiles(event)) event.preventDefault();
});
window.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  ui.dropOverlay.hidden = true;
  if (event.dataTransfer?.files.length) addFiles(event.dataTransfer.files);
});

void loadModel();
ui.prompt.focus();
