package grpcapi

import (
	"context"
	"log/slog"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshmart/meshmart/pkg/grpcerr"
	"github.com/meshmart/meshmart/pkg/interceptors"
	"github.com/meshmart/meshmart/pkg/paging"
	moneyv1 "github.com/meshmart/meshmart/proto/meshmart/money/v1"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	"github.com/meshmart/meshmart/services/order/internal/order"
)

// Catalog implements order.v1.CatalogService.
type Catalog struct {
	orderv1.UnimplementedCatalogServiceServer
	catalog *order.Catalog
	errs    grpcerr.Mapper
}

var _ orderv1.CatalogServiceServer = (*Catalog)(nil)

// NewCatalog returns the transport for catalog.
func NewCatalog(catalog *order.Catalog, log *slog.Logger) *Catalog {
	return &Catalog{catalog: catalog, errs: grpcerr.NewMapper(log, "the order database")}
}

// ListProducts implements order.v1.CatalogService.
func (c *Catalog) ListProducts(ctx context.Context, req *orderv1.ListProductsRequest) (*orderv1.ListProductsResponse, error) {
	ps, next, err := c.catalog.List(ctx, req.GetIncludeInactive(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, c.errs.Status(ctx, err)
	}
	return &orderv1.ListProductsResponse{Products: paging.Map(ps, productToProto), NextPageToken: next}, nil
}

// GetProduct implements order.v1.CatalogService.
func (c *Catalog) GetProduct(ctx context.Context, req *orderv1.GetProductRequest) (*orderv1.GetProductResponse, error) {
	p, err := c.catalog.Get(ctx, req.GetSku())
	if err != nil {
		return nil, c.errs.Status(ctx, err)
	}
	return &orderv1.GetProductResponse{Product: productToProto(p)}, nil
}

// CreateProduct implements order.v1.CatalogService.
func (c *Catalog) CreateProduct(ctx context.Context, req *orderv1.CreateProductRequest) (*orderv1.CreateProductResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	in := req.GetProduct()
	p, err := c.catalog.Create(ctx, who, order.Product{SKU: in.GetSku(), Name: in.GetName(), Currency: in.GetPrice().GetCurrencyCode(),
		PriceMinor: in.GetPrice().GetMinorUnits(), Active: in.GetActive()})
	if err != nil {
		return nil, c.errs.Status(ctx, err)
	}
	return &orderv1.CreateProductResponse{Product: productToProto(p)}, nil
}

// UpdateProduct implements order.v1.CatalogService.
func (c *Catalog) UpdateProduct(ctx context.Context, req *orderv1.UpdateProductRequest) (*orderv1.UpdateProductResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	in := req.GetProduct()
	var patch order.ProductPatch
	for _, path := range req.GetUpdateMask().GetPaths() {
		switch path {
		case "name":
			patch.Name = new(in.GetName())
		case "price":
			patch.Currency, patch.PriceMinor = new(in.GetPrice().GetCurrencyCode()), new(in.GetPrice().GetMinorUnits())
		case "active":
			patch.Active = new(in.GetActive())
		}
	}
	p, err := c.catalog.Update(ctx, who, in.GetSku(), in.GetEtag(), patch)
	if err != nil {
		return nil, c.errs.Status(ctx, err)
	}
	return &orderv1.UpdateProductResponse{Product: productToProto(p)}, nil
}

func productToProto(p order.Product) *orderv1.Product {
	return &orderv1.Product{
		Sku: p.SKU, Name: p.Name, Price: &moneyv1.Money{CurrencyCode: p.Currency, MinorUnits: p.PriceMinor}, Active: p.Active,
		CreateTime: timestamppb.New(p.CreateTime), UpdateTime: timestamppb.New(p.UpdateTime), Etag: p.Etag(),
	}
}
