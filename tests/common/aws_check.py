"""What a Python AWS consumer (boto3) sees of the secrets rekeyd wrote, and the moves of
other AWS actors (a rotation Lambda, an operator) that the tests need.

Usage: python3 aws_check.py ENDPOINT COMMAND ARGS...
  inspect NAME                  JSON: labels per version, rotation settings, AWSCURRENT/AWSPREVIOUS values
  create NAME VALUE             a secret whose first version is VALUE (AWSCURRENT)
  create-binary NAME HEX        the same with SecretBinary
  put-pending NAME TOKEN VALUE  a version labelled AWSPENDING, as a rotation Lambda's createSecret step makes
  restricted-user NAME          (moto with INITIAL_NO_AUTH_ACTION_COUNT=4: the harness's readiness probe and
                                the 3 IAM calls here are free) an IAM user that may create, read and describe
                                secrets but neither write versions nor list secrets, and a secret NAME it
                                created; prints its keys
  role-only-user                (moto with INITIAL_NO_AUTH_ACTION_COUNT=6) an IAM user that may only assume
                                the role "rekeyd", which may use Secrets Manager; prints the user's keys
  enable-rotation NAME          turn AWS-native rotation on with a rotation Lambda (moto runs it as a no-op
                                that leaves its AWSPENDING placeholder, like a Lambda that never finished)
"""

import base64
import io
import json
import sys
import urllib.request
import zipfile

import boto3


def value_of(client, name, stage):
    try:
        out = client.get_secret_value(SecretId=name, VersionStage=stage)
    except client.exceptions.ResourceNotFoundException:
        return None
    if "SecretString" in out:
        return {"id": out["VersionId"], "value": out["SecretString"]}
    return {"id": out["VersionId"], "value": "b64:" + base64.b64encode(out["SecretBinary"]).decode()}


def main():
    endpoint, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    client = boto3.client("secretsmanager", endpoint_url=endpoint)
    if command == "inspect":
        (name,) = args
        meta = client.describe_secret(SecretId=name)
        print(
            json.dumps(
                {
                    "stages": meta.get("VersionIdsToStages", {}),
                    "rotation_enabled": meta.get("RotationEnabled", False),
                    "kms_key_id": meta.get("KmsKeyId"),
                    "tags": {t["Key"]: t["Value"] for t in meta.get("Tags", [])},
                    "current": value_of(client, name, "AWSCURRENT"),
                    "previous": value_of(client, name, "AWSPREVIOUS"),
                }
            )
        )
    elif command == "create":
        name, value = args
        client.create_secret(Name=name, SecretString=value)
    elif command == "create-binary":
        name, hexed = args
        client.create_secret(Name=name, SecretBinary=bytes.fromhex(hexed))
    elif command == "put-pending":
        name, token, value = args
        client.put_secret_value(
            SecretId=name, ClientRequestToken=token, SecretString=value, VersionStages=["AWSPENDING"]
        )
    elif command == "restricted-user":
        (name,) = args
        iam = boto3.client("iam", endpoint_url=endpoint)
        iam.create_user(UserName="rekeyd")
        key = iam.create_access_key(UserName="rekeyd")["AccessKey"]
        allowed = ["CreateSecret", "ListSecretVersionIds", "GetSecretValue", "DescribeSecret"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": [f"secretsmanager:{a}" for a in allowed], "Resource": "*"}
            ],
        }
        iam.put_user_policy(UserName="rekeyd", PolicyName="read-only", PolicyDocument=json.dumps(policy))
        boto3.client(
            "secretsmanager",
            endpoint_url=endpoint,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        ).create_secret(Name=name, SecretString="v0")
        print(json.dumps({"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))
    elif command == "role-only-user":
        iam = boto3.client("iam", endpoint_url=endpoint)
        iam.create_user(UserName="base")
        key = iam.create_access_key(UserName="base")["AccessKey"]
        statement = lambda action: json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]}
        )
        iam.put_user_policy(UserName="base", PolicyName="assume", PolicyDocument=statement("sts:AssumeRole"))
        iam.create_role(RoleName="rekeyd", AssumeRolePolicyDocument=statement("sts:AssumeRole"))
        iam.put_role_policy(RoleName="rekeyd", PolicyName="sm", PolicyDocument=statement("secretsmanager:*"))
        print(json.dumps({"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))
    elif command == "enable-rotation":
        (name,) = args
        # moto's Lambda without Docker: functions exist, invocations do nothing.
        request = urllib.request.Request(
            endpoint + "/moto-api/config",
            data=json.dumps({"lambda": {"use_docker": False}}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request).read()
        role = boto3.client("iam", endpoint_url=endpoint).create_role(
            RoleName="rotation", AssumeRolePolicyDocument="{}"
        )["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as z:
            z.writestr("rotate.py", "def handler(event, context):\n    return {}\n")
        function = boto3.client("lambda", endpoint_url=endpoint).create_function(
            FunctionName="rotator",
            Runtime="python3.12",
            Role=role,
            Handler="rotate.handler",
            Code={"ZipFile": code.getvalue()},
        )["FunctionArn"]
        client.rotate_secret(
            SecretId=name,
            RotationLambdaARN=function,
            RotationRules={"AutomaticallyAfterDays": 30},
            RotateImmediately=False,
        )
        print(function)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
