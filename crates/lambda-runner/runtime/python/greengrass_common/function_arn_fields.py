"""The parts of a Lambda function ARN (Verdant)."""


class FunctionArnFields:
    """arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]"""

    def __init__(self, function_arn):
        parts = function_arn.split(":")
        if len(parts) < 7 or parts[0] != "arn" or parts[2] != "lambda" or parts[5] != "function":
            raise ValueError("not a Lambda function ARN: {}".format(function_arn))
        self.region = parts[3]
        self.account_id = parts[4]
        self.name = parts[6]
        self.qualifier = parts[7] if len(parts) > 7 else None
        self.unqualified_arn = ":".join(parts[:7])

    @staticmethod
    def build_function_arn(unqualified_arn, qualifier=None):
        if qualifier:
            return "{}:{}".format(unqualified_arn, qualifier)
        return unqualified_arn

    @staticmethod
    def build_arn_resource(name, qualifier=None):
        return FunctionArnFields.build_function_arn("function:" + name, qualifier)
