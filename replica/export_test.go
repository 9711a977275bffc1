package replica

// Helpers of the internal tests, for the external test package.
var (
	LocalPool  = localPool
	OverSocket = overSocket
)
