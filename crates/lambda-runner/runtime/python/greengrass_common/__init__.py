# Verdant's greengrass_common: what greengrasssdk imports from the core.
