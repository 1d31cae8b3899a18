"""Plan: from the facts and llmhost.yaml to one plan (cores, hugepages, kernel parameters, build
flags, services, GPU memory), pure data. It imports the facts and the base modules only."""
