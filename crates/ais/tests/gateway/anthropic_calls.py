"""Calls `ais serve`'s gateway with the official Anthropic Python SDK and prints, as
one JSON object, what the SDK made of each answer.

argv: base URL of the gateway, the caller's ais key, the spec (JSON): the model and
the prompts.
"""

import json
import sys

import anthropic


def main() -> None:
    base_url, key, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    model = spec["model"]
    # The ais key as the SDK's API key (sent as x-api-key); no SDK retries.
    client = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0, timeout=120)
    out = {}

    whole = client.messages.create(
        model=model,
        max_tokens=64,
        messages=[{"role": "user", "content": spec["whole"]}],
        metadata={"user_id": "claude-user"},
    )
    out["whole"] = {
        "text": "".join(block.text for block in whole.content if block.type == "text"),
        "usage": [whole.usage.input_tokens, whole.usage.output_tokens],
    }

    with client.messages.stream(
        model=model,
        max_tokens=64,
        messages=[{"role": "user", "content": spec["streamed"]}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    out["streamed"] = {
        "text": text,
        "usage": [final.usage.input_tokens, final.usage.output_tokens],
    }

    try:
        client.messages.create(
            model="no-such-claude", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
        out["unknown_model"] = None
    except anthropic.NotFoundError as error:
        out["unknown_model"] = {"status": error.status_code, "type": error.body["error"]["type"]}

    print(json.dumps(out))


if __name__ == "__main__":
    main()
