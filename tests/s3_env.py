"""The credentials the tests give the local S3 server (moto accepts any): imported by name, like fake_openai."""

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "moto-test-secret-never-logged",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
