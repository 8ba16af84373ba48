"""The flow-matching time convention and its mapping onto diffusers' ``FlowMatchEulerDiscreteScheduler``
(:mod:`ifsq_hf.schedulers.flow_matching`)."""
