package policy

// ImagePattern is a parsed, normalised image pattern, for tools that render patterns in
// another language (the backstop's CEL). Segments are globs within one path segment, or
// "**" spanning any number of segments ("**/**" is given as one "**"); the first is the
// registry host, lower-cased, unless it is "**".
type ImagePattern struct {
	Segments []string
	// Tag is a glob on the tag; empty matches any tag (and images without one). A
	// digest-only image has the empty tag, which only globs such as "*" match.
	Tag string
	// Digest must equal the image's digest; empty matches any.
	Digest string

	compiled *imagePattern
}

// ParseImagePattern normalises and checks an anyImage/allImages pattern exactly as
// Compile does.
func ParseImagePattern(p string) (ImagePattern, error) {
	ip, err := compileImagePattern(p)
	if err != nil {
		return ImagePattern{}, err
	}
	out := ImagePattern{Segments: make([]string, len(ip.segs)), Tag: ip.tag, Digest: ip.digest, compiled: &ip}
	for i, g := range ip.segs {
		out.Segments[i] = g.pattern
	}
	return out, nil
}

// Matches reports whether the normalised image satisfies the pattern, exactly as
// Evaluate matches it.
func (p ImagePattern) Matches(img Image) bool {
	return p.compiled != nil && p.compiled.matches(&img)
}
