# Verdant's greengrass_ipc_python_sdk: the function side of the core's IPC.
