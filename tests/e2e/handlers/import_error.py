# A handler whose import fails, as a newcomer's often does: the module it needs is missing.
import gantry.serverless as serverless
import no_such_module_for_this_test  # noqa: F401

serverless.start({"handler": lambda job: job["input"]})
