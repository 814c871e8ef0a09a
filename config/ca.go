package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// maxCAFile bounds ca_file's read: a bundle of every public CA is about
// 250 KiB, and a path such as /dev/zero must not eat the daemon's memory.
const maxCAFile = 4 << 20

// LoadCA reads the PEM certificates in path into a pool, for ca_file. It
// refuses what is not a regular file (a FIFO would block the parser), a
// file that is too large, and one with no certificate in it, so that a
// wrong path is reported where it is written rather than as a TLS error
// at the first connection.
func LoadCA(path string) (*x509.CertPool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	data, err := readLimited(path, maxCAFile)
	if err != nil {
		return nil, err
	}
	if len(data) > maxCAFile {
		return nil, fmt.Errorf("%s is larger than %d bytes; want PEM certificates", path, maxCAFile)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, errors.New(path + " holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
	}
	return pool, nil
}
