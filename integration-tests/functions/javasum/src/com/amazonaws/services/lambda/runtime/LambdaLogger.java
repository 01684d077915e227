// The shape of the AWS Lambda Java LambdaLogger interface (see RequestHandler).
package com.amazonaws.services.lambda.runtime;

public interface LambdaLogger {
    void log(String message);
}
