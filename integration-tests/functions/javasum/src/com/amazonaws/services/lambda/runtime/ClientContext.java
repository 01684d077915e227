// The shape of the AWS Lambda Java ClientContext interface (see RequestHandler).
package com.amazonaws.services.lambda.runtime;

import java.util.Map;

public interface ClientContext {
    Map<String, String> getCustom();
    Map<String, String> getEnvironment();
}
