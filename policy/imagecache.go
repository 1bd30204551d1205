package policy

import (
	"sync"
	"sync/atomic"
)

// ImageCache remembers normalised images. Pods of one workload repeat the same images,
// and parsing a reference costs far more than a map load. The cache is bounded: when
// it holds MaxEntries images it is cleared and refills with what is in use, so a flood
// of distinct names can't grow it without limit.
type ImageCache struct {
	MaxEntries int64

	m sync.Map // raw reference -> Image
	n atomic.Int64
}

// NewImageCache returns a cache of at most maxEntries images.
func NewImageCache(maxEntries int64) *ImageCache { return &ImageCache{MaxEntries: maxEntries} }

// Normalize is NormalizeImage with a cache. Invalid references are not cached.
func (c *ImageCache) Normalize(s string) (Image, error) {
	if v, ok := c.m.Load(s); ok {
		return v.(Image), nil
	}
	img, err := NormalizeImage(s)
	if err != nil {
		return img, err
	}
	if c.n.Add(1) > c.MaxEntries {
		c.m.Clear()
		c.n.Store(1)
	}
	c.m.Store(s, img)
	return img, nil
}
