"""The server refuses settings that would be unsafe outside dev mode, saying what to do."""

from __future__ import annotations

import pytest

from auditlog_service.config import Settings, SettingsError, check_settings

SAFE = Settings(
    token_secret="s3cret",
    jwks_file="/etc/auditlog/jwks.json",
    jwt_issuer="idp",
    checkpoint_key_file="/etc/auditlog/checkpoint.pem",
)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"token_secret": ""}, "AUDITLOG_TOKEN_SECRET"),
        ({"jwks_file": ""}, "AUDITLOG_JWKS_FILE"),
        ({"jwt_issuer": ""}, "AUDITLOG_JWT_ISSUER"),
        ({"checkpoint_key_file": ""}, "AUDITLOG_CHECKPOINT_KEY_FILE"),
        ({"tls_cert": "cert.pem"}, "both"),
        ({"tls_client_ca": "ca.pem"}, "--tls-client-ca"),
        ({"listen": "0.0.0.0:50051"}, "plaintext"),
        ({"listen": "10.1.2.3:50051"}, "plaintext"),
        ({"metrics_listen": "0.0.0.0:9464"}, "--metrics-listen"),
        ({"workers": 0}, "--workers"),
    ],
)
def test_unsafe_settings_are_refused_with_the_way_out(
    changes: dict[str, object], says: str
) -> None:
    with pytest.raises(SettingsError, match=says):
        check_settings(Settings(**{**SAFE.__dict__, **changes}))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"listen": "localhost:50051"},
        {"listen": "[::1]:50051"},
        {"listen": "0.0.0.0:50051", "insecure": True},
        {"listen": "0.0.0.0:50051", "tls_cert": "c.pem", "tls_key": "k.pem"},
        {"jwks_file": "", "jwks_url": "https://idp.example/jwks"},
        {"metrics_listen": "127.0.0.1:9464", "workers": 4},
        {"metrics_listen": "0.0.0.0:9464", "insecure": True},
    ],
)
def test_safe_settings_pass(changes: dict[str, object]) -> None:
    check_settings(Settings(**{**SAFE.__dict__, **changes}))  # type: ignore[arg-type]
