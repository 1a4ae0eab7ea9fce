"""The Responses bridge, pure: a chat-only upstream serves Responses API requests.

Three translations, dicts or bytes in and out (no I/O, no aiohttp, no logging):

- `responses_to_chat(body)`: a Responses request → the chat request that asks the same, or an
  `InvalidRequest` (400) naming the first field the chat request cannot carry.
- `chat_to_response(completion, request, ids)`: a `chat.completion` → a Response object.
- `StreamTranslator`: `chat.completion.chunk`s → Responses stream events, as SSE bytes.

Decisions, field by field (the installed `openai` types are the reference for every shape):

- Carried: `instructions` → a first `system` message; `input` (a string → one user message;
  message items → messages, `developer` → `system` because open servers' chat templates
  know `system` and OpenAI treats the two as one role; consecutive `function_call` items →
  one assistant message with `tool_calls`, joined to the assistant message just before
  them since a chat turn with text and calls is one message; `function_call_output` → a
  `tool` message); content parts `input_text`/`output_text` → `text`, `refusal` (assistant)
  → `refusal`, `input_image` with a URL → `image_url`, `input_file` with `file_data` or
  `file_id` → chat's `file` part; function tools → nested (`name`, `description`,
  `parameters`, `strict`, those given); `tool_choice` → nested, `allowed_tools` → chat's own
  `allowed_tools` form (a later stage emulates it where an upstream lacks it);
  `max_output_tokens` → `max_tokens` (what vLLM, SGLang, llama.cpp and Ollama all accept);
  `reasoning.effort` → `reasoning_effort` (one knob, one value set in both APIs);
  `text.format` → `response_format`, `text.verbosity` → `verbosity`; `temperature`,
  `top_p`, `parallel_tool_calls`, `user`, `safety_identifier`, `prompt_cache_key`,
  `prompt_cache_retention`, `service_tier` as they are; `logit_bias` too (not a Responses
  field, but vLLM takes it as an extension and a policy may set it for a chat upstream);
  `stream: true` adds `stream_options.include_usage` (the Response needs usage). Without
  tools, `parallel_tool_calls` and a `none`/`auto` choice ask nothing and are not sent
  (chat servers refuse them there). Tool outputs made of text parts stay text parts (chat's
  `tool` messages take them; the upstream joins them as its template does).
- Answered by the bridge: `metadata` is attached to the Response (chat's `metadata` goes
  with stored completions, which the bridge does not make).
- Accepted only at the value that asks nothing: `store` false or absent, `background`
  false, `truncation: disabled`, `include: []`, `stream_options.include_obfuscation` false.
- A 400 naming the field: `previous_response_id`, `conversation`, `prompt`,
  `max_tool_calls`, `top_logprobs`, `context_management` and OpenAI-only options
  (`moderation`, `image`, `prompt_cache_options`, `background_options`, `access_programs`);
  non-function tools, function tools' `output_schema`/`allowed_callers`; input items other
  than messages, calls and call outputs (`reasoning`, `item_reference`, hosted tools' calls:
  chat has no place for them); image and file parts outside user messages and in tool
  outputs (chat's `tool` messages take text only); `input_image` by `file_id` and
  `input_file` by `file_url` (no chat form); `reasoning.summary` and the like; a message's
  `phase`. Unknown fields are a 400 too: nothing is dropped silently. A field set to `null`
  counts as absent; an item's `id` and `status` and an output text's `annotations` and
  `logprobs` are bookkeeping of a past answer and carry nothing to the model.
- Answers: a `message` item when there is text (or a refusal), then one `function_call`
  item per call; `finish_reason` `length` or `content_filter` → `incomplete`, the last item
  `incomplete` too; `model` is the upstream's; `usage` is null when the upstream gave none.
  Not carried back: a chat answer's `reasoning_content` (a vendor extension outside the chat
  types; the bridge makes no `reasoning` items, which it could not take back as input).
- Streams: items are written one after the other, as every known server streams them; a
  call's `id` and `name` come from its first delta (a later name fills an empty one); a
  delta for a call already closed ends the stream in an `error` event, as does an upstream
  `{"error": …}` chunk or a break the caller reports.

Ids are derived from a seed (the proxy's request id), so that a translation is a pure
function of its inputs: `resp_<seed>`, and per output index `msg_<seed>_<n>` or
`fc_<seed>_<n>` (see `ResponseIds`).
"""

from proxy.bridge.answer import ResponseIds, chat_to_response
from proxy.bridge.request import responses_to_chat
from proxy.bridge.stream import StreamTranslator, error_event_fields

__all__ = [
    "ResponseIds",
    "StreamTranslator",
    "chat_to_response",
    "error_event_fields",
    "responses_to_chat",
]
