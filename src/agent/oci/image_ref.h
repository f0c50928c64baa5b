#pragma once
// ImageRef: an OCI image reference as Docker reads it, and the syntax of the digests in it. Part
// of the image store's API (image_store.h includes it); pure functions, thread-safe.

#include <string>
#include <string_view>

#include "common/status.h"

namespace gantry::agent::oci {

// A parsed image reference, by Docker's rules: [REGISTRY/]REPOSITORY[:TAG][@DIGEST]. A first
// component with a '.' or ':', or "localhost", is the registry; otherwise the registry is
// docker.io and a one-component repository gets "library/" ("python:3.11" is
// "docker.io/library/python:3.11"). Without tag and digest the tag is "latest".
struct ImageRef {
  std::string registry;    // "docker.io", "ghcr.io", "127.0.0.1:5000", "[::1]:5000"
  std::string repository;  // "library/python", "gantry/test"
  std::string tag;         // "latest" when neither a tag nor a digest was given
  std::string digest;      // "sha256:<64 hex>" or "sha512:<128 hex>", or empty

  // InvalidArgument saying what is wrong (empty, upper case in the repository, a bad tag or
  // digest, a bad registry host).
  static Result<ImageRef> Parse(std::string_view text);

  // "REGISTRY/REPOSITORY[:TAG][@DIGEST]": the normalised reference, for messages and keys.
  std::string ToString() const;
  // What skopeo fetches: "docker://REGISTRY/REPOSITORY@DIGEST" when there is a digest (a tag is
  // then ignored: the digest decides), else "docker://REGISTRY/REPOSITORY:TAG".
  std::string TransportRef() const;
  // The registry's host, without port and brackets: "127.0.0.1", "::1", "ghcr.io".
  std::string Host() const;
  // True for a registry on this host: "localhost", 127.0.0.0/8, ::1. Such a registry is reached
  // over plain HTTP (or HTTPS without verification).
  bool IsLoopback() const;
  // The name of this reference's tag in the store's OCI layout: ToString() with every character
  // outside [A-Za-z0-9._-] replaced by '_' (at most 100 of them), then '-' and 12 hex characters
  // of the SHA-256 of ToString(), so that two references never share a tag.
  std::string LayoutTag() const;
};

// "sha256:<64 lowercase hex>" or "sha512:<128 lowercase hex>".
bool IsDigest(std::string_view d);
// "sha256:<64 lowercase hex>": the only digests the store keys rootfs by.
bool IsSha256Digest(std::string_view d);

}  // namespace gantry::agent::oci
