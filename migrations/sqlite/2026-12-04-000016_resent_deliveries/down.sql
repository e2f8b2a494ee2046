DROP TABLE resent_deliveries;
