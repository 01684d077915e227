// The shape of the AWS Lambda Java Context interface (see RequestHandler).
package com.amazonaws.services.lambda.runtime;

public interface Context {
    String getAwsRequestId();
    String getFunctionName();
    String getFunctionVersion();
    String getInvokedFunctionArn();
    int getRemainingTimeInMillis();
    int getMemoryLimitInMB();
    ClientContext getClientContext();
    LambdaLogger getLogger();
}
