// The shape of the AWS Lambda Java handler interface, declared here so the
// test's function compiles without downloading aws-lambda-java-core (real
// functions bundle that jar; the runtime needs neither).
package com.amazonaws.services.lambda.runtime;

public interface RequestHandler<I, O> {
    O handleRequest(I input, Context context);
}
