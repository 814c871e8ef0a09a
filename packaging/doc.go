// Package packaging holds what the .deb and .rpm packages are built from:
// the systemd units, the maintainer scripts, and nfpm.yaml, which the nfpm
// CLI builds from in make package-test. Its tests check that the nfpms
// section of .goreleaser.yaml, which builds the released packages, holds
// the same; there is no Go code to import.
package packaging
