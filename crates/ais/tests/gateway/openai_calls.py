"""Calls `ais serve`'s gateway with the official OpenAI Python SDK and prints, as one
JSON object, what the SDK made of each answer.

argv: base URL of the gateway (…/v1), the caller's ais key, the spec (JSON): prompts
and the model to ask for.
"""

import json
import sys

import openai


def main() -> None:
    base_url, key, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    model = spec["model"]
    # No SDK retries: every call the test counts is one the SDK made once.
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)
    out = {}

    whole = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": spec["whole"]}],
        user="user-whole",
        extra_headers={"x-feature": "search"},
    )
    out["whole"] = {
        "content": whole.choices[0].message.content,
        "usage": [whole.usage.prompt_tokens, whole.usage.completion_tokens],
        "model": whole.model,
    }

    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": spec["streamed"]}],
        stream=True,
        user="user-stream",
    )
    content, usage_chunks, chunks = [], 0, 0
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage_chunks += 1
        for choice in chunk.choices:
            if choice.delta.content:
                content.append(choice.delta.content)
    out["streamed"] = {"content": "".join(content), "usage_chunks": usage_chunks, "chunks": chunks}

    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": spec["streamed_usage"]}],
        stream=True,
        stream_options={"include_usage": True},
    )
    content, usage = [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens]
        for choice in chunk.choices:
            if choice.delta.content:
                content.append(choice.delta.content)
    out["streamed_usage"] = {"content": "".join(content), "usage": usage}

    completion = client.completions.create(model=model, prompt=spec["completion"])
    out["completion"] = {"text": completion.choices[0].text}

    embedding = client.embeddings.create(model=model, input=spec["embedding"])
    out["embedding"] = {"vector": embedding.data[0].embedding}

    out["models"] = sorted(m.id for m in client.models.list().data)

    try:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
        out["unknown_model"] = None
    except openai.NotFoundError as error:
        out["unknown_model"] = {"status": error.status_code, "code": error.code}

    try:
        openai.OpenAI(base_url=base_url, api_key="not-a-key", max_retries=0).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}]
        )
        out["bad_key"] = None
    except openai.AuthenticationError as error:
        out["bad_key"] = {"status": error.status_code, "code": error.code}

    print(json.dumps(out))


if __name__ == "__main__":
    main()
