"""moto_server, with four places where moto 5.2 differs from AWS Secrets Manager set right.

rekeyd's AWS tests run the real SDK against moto over HTTP. Where moto's model of Secrets
Manager departs from AWS's documented behaviour in a way those tests depend on, this file
patches moto (and nothing else) before starting the unchanged server:

1. Atomic calls. AWS applies each call to a secret atomically; moto's threaded server runs
   calls concurrently without a lock, so two racing PutSecretValue calls with the same
   token could both "create" the version. One lock around the Secrets Manager backend.
2. Token reuse. AWS: a PutSecretValue whose ClientRequestToken names an existing version
   with a different value fails with ResourceExistsException. moto skips that check while
   the version holds AWSPENDING (meant for the valueless placeholder its RotateSecret
   makes) and overwrites the value. The check is skipped only for valueless versions.
3. ListSecretVersionIds reports each version's own CreatedDate (moto reports the time of
   the call), and a missing secret is ResourceNotFoundException (moto fails with a 500).
4. Atomic stage moves. UpdateSecretVersionStage with an unknown MoveToVersionId fails
   without changing anything (moto removes the label from RemoveFromVersionId first).

Usage: python3 moto_server.py [moto_server arguments, e.g. -H 127.0.0.1 -p PORT]
"""

import functools
import json
import sys
import threading

import moto
import moto.secretsmanager.models as models
from moto.secretsmanager.exceptions import (
    InvalidParameterException,
    ResourceExistsException,
    SecretNotFoundException,
)
from moto.server import main

if not moto.__version__.startswith("5."):
    sys.exit(f"rekeyd's moto shim was written for moto 5.x, found {moto.__version__}")

Backend = models.SecretsManagerBackend
LOCK = threading.RLock()


def locked(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with LOCK:
            return method(*args, **kwargs)

    return wrapper


# 2. Token reuse with a different value is refused, as AWS does.
original_check = Backend._check_with_existing_secrets_and_versions


def check_existing(self, secret_name, client_request_token, secret_string, secret_binary, on_create=False):
    secret = self.secrets[secret_name] if secret_name in self.secrets.keys() else None
    version = secret.versions.get(client_request_token) if secret and client_request_token else None
    has_value = version is not None and ("secret_string" in version or "secret_binary" in version)
    if has_value and "AWSPENDING" in version.get("version_stages", []):
        if version.get("secret_string") == secret_string and version.get("secret_binary") == secret_binary:
            return secret
        raise ResourceExistsException(
            f"You can't use ClientRequestToken {client_request_token} because that value is "
            f"already in use for a version of secret {secret.arn}."
        )
    return original_check(self, secret_name, client_request_token, secret_string, secret_binary, on_create)


Backend._check_with_existing_secrets_and_versions = check_existing

# 3. Each version's own creation date.
original_list_versions = Backend.list_secret_version_ids


def list_secret_version_ids(self, secret_id, *args, **kwargs):
    secret = self.secrets.get(secret_id)
    if secret is None:
        raise SecretNotFoundException()
    out = json.loads(original_list_versions(self, secret_id, *args, **kwargs))
    versions = secret.versions
    for v in out["Versions"]:
        v["CreatedDate"] = versions[v["VersionId"]]["createdate"]
    return json.dumps(out)


Backend.list_secret_version_ids = list_secret_version_ids

# 4. Validate before changing anything.
original_update_stage = Backend.update_secret_version_stage


def update_secret_version_stage(self, secret_id, version_stage, remove_from_version_id, move_to_version_id):
    if secret_id in self.secrets and move_to_version_id:
        if move_to_version_id not in self.secrets[secret_id].versions:
            raise InvalidParameterException(f"Not a valid version: {move_to_version_id}")
    return original_update_stage(self, secret_id, version_stage, remove_from_version_id, move_to_version_id)


Backend.update_secret_version_stage = update_secret_version_stage

# 1. One call at a time.
for name in (
    "create_secret",
    "put_secret_value",
    "update_secret_version_stage",
    "get_secret_value",
    "list_secret_version_ids",
    "describe_secret",
    "list_secrets",
    "rotate_secret",
    "cancel_rotate_secret",
    "delete_secret",
):
    setattr(Backend, name, locked(getattr(Backend, name)))

if __name__ == "__main__":
    main(sys.argv[1:])
