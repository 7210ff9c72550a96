// Tool definitions shared by the structured-output tests: bounded arguments, so random weights finish them.
import type { FunctionTool } from "../../src/structured.js";

export const WEATHER_TOOL: FunctionTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", maxLength: 20 }, unit: { type: "string", enum: ["c", "f"] } },
      required: ["city", "unit"],
      additionalProperties: false,
    },
  },
};
