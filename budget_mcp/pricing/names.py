"""How model and provider names from different sources are brought to one spelling, so they can be compared."""

# Provider names used by LiteLLM and OpenRouter, spelled as genai-prices spells them.
_PROVIDER_ALIASES = {
    "gemini": "google",
    "vertex_ai": "google",
    "vertex_ai-language-models": "google",
    "google-vertex": "google",
    "xai": "x-ai",
    "moonshot": "moonshotai",
    "mistralai": "mistral",
    "meta-llama": "meta",
    "bedrock": "aws",
    "bedrock_converse": "aws",
    "amazon": "aws",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "azure_ai": "azure",
}


def canonical_provider(name: str) -> str:
    """A provider id as genai-prices spells it ('gemini' -> 'google', 'xai' -> 'x-ai')."""
    lowered = name.strip().lower()
    return _PROVIDER_ALIASES.get(lowered, lowered)


def split_model(name: str) -> tuple[str | None, str]:
    """('openai', 'gpt-4o') from 'openai/gpt-4o'; (None, 'gpt-4o') when there is no provider prefix."""
    prefix, slash, rest = name.partition("/")
    return (prefix, rest) if slash and rest else (None, name)


def model_key(name: str) -> str:
    """A spelling that ignores case and dots versus dashes ('claude-sonnet-4.5' == 'claude-sonnet-4-5')."""
    return name.strip().lower().replace(".", "-")
