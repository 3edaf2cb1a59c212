// Package ipvs keeps the kernel's IP Virtual Server table equal to a desired
// state computed from the configuration and health results: it models
// virtual services and real servers and applies the minimal difference.
package ipvs
