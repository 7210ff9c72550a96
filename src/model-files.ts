// The first look at the model files, before any native code: they exist, are files, and start
// like GGUF. (What is inside them is checked natively, before llama.cpp reads them: native/gguf-check.cpp.)
import { open, stat } from "node:fs/promises";

import { FileNotFoundError, ModelLoadError } from "./errors.js";

export async function checkGguf(path: string, what: "model" | "mmproj"): Promise<void> {
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    throw new FileNotFoundError(path, `The ${what} file ${path} does not exist. Check the path.`, { cause: error });
  }
  if (!info.isFile()) {
    throw new FileNotFoundError(path, `The ${what} path ${path} is ${info.isDirectory() ? "a directory" : "not a regular file"}; pass the path of a .gguf file.`);
  }
  const handle = await open(path, "r");
  try {
    const { bytesRead, buffer } = await handle.read(Buffer.alloc(4), 0, 4, 0);
    if (bytesRead < 4 || buffer.toString("latin1") !== "GGUF") {
      const kind = what === "model" ? "a text model" : "a multimodal projector (mmproj)";
      throw new ModelLoadError(`The ${what} file ${path} is not a GGUF file (it does not start with "GGUF"). Pass ${kind} in GGUF format.`);
    }
  } finally {
    await handle.close();
  }
}
