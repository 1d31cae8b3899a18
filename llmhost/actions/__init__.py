"""Actions: what changes the host - image builds, deployments, host files, model pulls. Each
carries out a plan and passes verify's gates (a build is tagged only after its checks)."""
