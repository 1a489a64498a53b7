"""Which chat model a turn talks to: the offline one by default, any OpenAI-compatible endpoint by config.

::

    engine:
      model: openai            # default: offline
      openai:
        base_url: http://localhost:8001/v1
        model: my-model
        api_key_env: MY_KEY    # the *name* of the variable holding the key

Only this module imports ``langchain_openai``; the rest of the agent sees a ``BaseChatModel``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

from app.agent.offline import OfflineChatModel
from app.config import EngineConfig, OpenAIConfig
from app.errors import ConfigError

log = logging.getLogger("isotope.agent")

PLACEHOLDER_KEY = "not-needed"


def make_model(config: EngineConfig, environ: Mapping[str, str] | None = None) -> BaseChatModel:
    """The chat model ``config.model`` names."""
    if config.model == "openai":
        return make_openai_model(config.openai, environ)
    return OfflineChatModel()


def make_openai_model(config: OpenAIConfig, environ: Mapping[str, str] | None = None) -> BaseChatModel:
    """A ``ChatOpenAI`` for this endpoint; the key is read from ``config.api_key_env``."""
    from langchain_openai import ChatOpenAI  # imported here: the offline default must not need it

    environ = os.environ if environ is None else environ
    key = environ.get(config.api_key_env)
    if not key:
        if config.base_url is None:
            raise ConfigError(
                f"engine.openai.api_key_env: environment variable {config.api_key_env} is not set; "
                "export the key there, set engine.openai.base_url for a local server, "
                "or use engine.model: offline"
            )
        key = PLACEHOLDER_KEY
    log.info("model: openai-compatible %s at %s", config.model, _host(config.base_url))
    return ChatOpenAI(
        model=config.model,
        base_url=config.base_url,
        api_key=SecretStr(key),
        temperature=config.temperature,
        timeout=config.timeout_s,
        max_retries=config.max_retries,
    )


def _host(base_url: str | None) -> str:
    """Where the model lives, for logs: scheme, host and path, never credentials in the URL."""
    if base_url is None:
        return "api.openai.com"
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
