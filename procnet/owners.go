package procnet

// Owner is the process that holds a socket.
type Owner struct {
	PID  int
	Name string
}

// maxProcs bounds how many processes Owners looks through.
const maxProcs = 4096
